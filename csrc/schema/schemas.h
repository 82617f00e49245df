// One `define_<family>_ops` per op family; library.cpp calls them all inside TORCH_LIBRARY.
#pragma once
#include <torch/library.h>

namespace bigkern {
void define_pool_ops(torch::Library& m);
void define_attention_ops(torch::Library& m);
void define_rnn_ops(torch::Library& m);
void define_conv_ops(torch::Library& m);
}  // namespace bigkern
