"""Drop-in recurrent modules: subclasses of torch.nn.LSTM, LSTMCell, GRU, GRUCell, RNN and
RNNCell with the same constructor, parameters (weight_ih_l0, weight_hh_l0_reverse, ...),
state_dict and repr, whose forward runs bigkern.ops. Checkpoints load both ways, isinstance
checks against the torch classes pass, and flatten_parameters() is torch's own (it only
regroups the same parameters in memory)."""

import torch

from bigkern import ops
from bigkern.swap import register_swappable


class _SequenceMixin:
    def _weights(self):
        # torch refreshes _flat_weights lazily when parameters were replaced (e.g. by swap or
        # load_state_dict(assign=True)); older torch versions keep it current eagerly.
        update = getattr(self, "_update_flat_weights", None)
        if update is not None:
            update()
        return self._flat_weights

    def _common(self):
        return dict(num_layers=self.num_layers, bidirectional=self.bidirectional, batch_first=self.batch_first,
                    dropout=float(self.dropout), training=self.training)  # fmt: skip


class LSTM(_SequenceMixin, torch.nn.LSTM):
    def forward(self, input, hx=None):
        return ops.lstm(input, hx, self._weights(), has_biases=self.bias, **self._common())


class GRU(_SequenceMixin, torch.nn.GRU):
    def forward(self, input, hx=None):
        return ops.gru(input, hx, self._weights(), has_biases=self.bias, **self._common())


class RNN(_SequenceMixin, torch.nn.RNN):
    def forward(self, input, hx=None):
        return ops.rnn(input, hx, self._weights(), has_biases=self.bias, nonlinearity=self.nonlinearity,
                       **self._common())  # fmt: skip


class LSTMCell(torch.nn.LSTMCell):
    def forward(self, input, hx=None):
        return ops.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCell(torch.nn.GRUCell):
    def forward(self, input, hx=None):
        return ops.gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class RNNCell(torch.nn.RNNCell):
    def forward(self, input, hx=None):
        return ops.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)


register_swappable(torch.nn.LSTM, LSTM, "lstm")
register_swappable(torch.nn.GRU, GRU, "gru")
register_swappable(torch.nn.RNN, RNN, "rnn")
register_swappable(torch.nn.LSTMCell, LSTMCell, "lstm_cell")
register_swappable(torch.nn.GRUCell, GRUCell, "gru_cell")
register_swappable(torch.nn.RNNCell, RNNCell, "rnn_cell")
