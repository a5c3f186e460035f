// The one Catch2 main of every tfla test binary.
#define CATCH_CONFIG_MAIN
#include "tfla_catch.hpp"
