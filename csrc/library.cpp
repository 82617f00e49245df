// The single TORCH_LIBRARY block of the `bigkern` op namespace: every schema is defined here,
// once, through the per-family functions in schema/.
#include <torch/library.h>

#include "schema/schemas.h"

TORCH_LIBRARY(bigkern, m) {
  bigkern::define_pool_ops(m);
  bigkern::define_attention_ops(m);
  bigkern::define_rnn_ops(m);
  bigkern::define_conv_ops(m);
}
