"""Optional integrations of bigkern with other libraries.

Each submodule imports its library only when its ``register()`` is called, so importing bigkern
never imports them (nor needs them installed).
"""
