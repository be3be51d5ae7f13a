//===- Passes.cpp - Kiln pass registration --------------------------------===//

#include "passes/Passes.h"
