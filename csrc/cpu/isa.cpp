// The run-time ISA choice (cpu/isa.h) as a plain function, for bigkern._C.cpu_isa(): module.cpp
// stays free of library headers.
#include "cpu/isa.h"

namespace bigkern::cpu {

const char* selected_isa_name() { return isa_name(cpu_isa_level()); }

}  // namespace bigkern::cpu
