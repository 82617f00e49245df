"""Build bigkern._C: C++ CPU kernels always, CUDA kernels whenever a toolkit and a CUDA torch exist.

The decision to compile CUDA never looks at torch.cuda.is_available(): build machines
(CI included) have a toolkit but no GPU, and must still compile and link every .cu file.

    BIGKERN_BUILD_CUDA=auto   (default) compile CUDA when a toolkit and a CUDA build of torch exist
    BIGKERN_BUILD_CUDA=1      compile CUDA or fail loudly saying what is missing
    BIGKERN_BUILD_CUDA=0      CPU kernels only
    TORCH_CUDA_ARCH_LIST      architectures to compile for (default "8.0;9.0+PTX")
    MAX_JOBS                  parallel compile jobs (honoured by torch's ninja builder)
"""

from __future__ import annotations

import glob
import os
import site
import sys
import sysconfig
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: the one that holds lib64/libcudart.so.

    The `nvcc` first on PATH may be a wrapper script outside the toolkit, which makes
    torch guess CUDA_HOME wrongly (and linking then fails with `cannot find -lcudart`),
    so look in the conventional install locations before trusting PATH.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True) + ["/opt/cuda"]
    for root in candidates:
        if os.path.exists(os.path.join(root, "lib64", "libcudart.so")) and os.path.exists(
            os.path.join(root, "bin", "nvcc")
        ):
            return os.path.realpath(root)
    return None


def nvidia_wheel_include_dirs() -> list[str]:
    """Include dirs of the nvidia-* wheels torch's CUDA build installs (cusparse.h, cublas_v2.h live there)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # virtualenvs made by old tools lack getsitepackages
        pass
    dirs = []
    for root in sorted(roots):
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if any(os.path.exists(os.path.join(inc, h)) for h in ("cusparse.h", "cublas_v2.h")):
                dirs.append(inc)
    return dirs


def want_cuda(cuda_home: str | None) -> bool:
    mode = os.environ.get("BIGKERN_BUILD_CUDA", "auto").strip().lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"BIGKERN_BUILD_CUDA={mode!r}: expected auto, 0 or 1")
    if mode == "0":
        return False
    import torch

    missing = []
    if torch.version.cuda is None:
        missing.append(f"torch {torch.__version__} is not a CUDA build")
    if cuda_home is None:
        missing.append("no CUDA toolkit found (set CUDA_HOME to the directory holding bin/nvcc and lib64/libcudart.so)")
    if missing and mode == "1":
        sys.exit("BIGKERN_BUILD_CUDA=1 but CUDA kernels cannot be built: " + "; ".join(missing))
    if missing:
        print("bigkern: building CPU kernels only: " + "; ".join(missing), file=sys.stderr)
    return not missing


def rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def extensions():
    cuda_home = find_cuda_home()
    if cuda_home:
        # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once.
        os.environ["CUDA_HOME"] = cuda_home
    with_cuda = want_cuda(cuda_home)
    if with_cuda:
        # cpp_extension crashes when it has to ask a (missing) GPU for its architecture.
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)

    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    sources = rel(glob.glob(str(ROOT / "csrc" / "*.cpp")))
    sources += rel(glob.glob(str(ROOT / "csrc" / "schema" / "*.cpp")))
    sources += rel(glob.glob(str(ROOT / "csrc" / "cpu" / "*.cpp")))
    include_dirs = [str(ROOT / "csrc")]
    # -fopenmp: at::parallel_for is inlined into our code as an OpenMP region (torch's CPU
    # builds use the OpenMP backend); without the flag the pragma is ignored and kernels run on
    # one thread. torch itself links the same OpenMP runtime.
    cxx_flags = ["-O3", "-fno-math-errno", "-Wno-unused-function", "-fopenmp"]
    link_flags = ["-fopenmp"]

    if not with_cuda:
        ext = CppExtension(
            "bigkern._C",
            sources,
            include_dirs=include_dirs,
            define_macros=[("BIGKERN_CUDA_ARCHS", '""')],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
        return [ext], BuildExtension

    arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
    sources += rel(glob.glob(str(ROOT / "csrc" / "cuda" / "**" / "*.cu"), recursive=True))
    sources += rel(glob.glob(str(ROOT / "csrc" / "cuda" / "**" / "*.cpp"), recursive=True))
    include_dirs += nvidia_wheel_include_dirs()
    nvcc_flags = [
        "-O3",
        "--expt-relaxed-constexpr",
        "-lineinfo",
        # torch's headers disable these conversions for nvcc; our kernels do half arithmetic in float.
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    ]
    archs_macro = '"' + arch_list.replace(" ", ";") + '"'
    ext = CUDAExtension(
        "bigkern._C",
        sources,
        include_dirs=include_dirs,
        define_macros=[("BIGKERN_WITH_CUDA", None), ("BIGKERN_CUDA_ARCHS", archs_macro)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags,
    )
    return [ext], BuildExtension


ext_modules, build_ext = extensions()
setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext.with_options(use_ninja=True)})
