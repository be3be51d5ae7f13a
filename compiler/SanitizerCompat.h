//===- SanitizerCompat.h - LLVM as its libraries see it ---------*- C++ -*-===//
//
// Force-included (-include) into every compiler-side file of a KILN_SANITIZE
// build that has AddressSanitizer. Kiln is instrumented; Debian's LLVM and
// MLIR libraries are not. LLVM's headers poison and unpoison the memory of
// BumpPtrAllocator slabs (and Recycler, ArrayRecycler, json::Value) when the
// file including them is instrumented, while the libraries' copies of the
// same inline functions do nothing; the linker keeps one copy of each, so a
// slab poisoned by Kiln's copy is handed out by the library's and ASan
// reports a use-after-poison inside MLIR (BuiltinDialect::initialize, in
// every kiln-opt run). Defining the hooks away makes Kiln's copies match the
// libraries'. Kiln's own memory (heap, stack, globals, and the ops MLIR
// allocates with malloc) is checked as before.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_COMPILER_SANITIZERCOMPAT_H
#define KILN_COMPILER_SANITIZERCOMPAT_H

#include <sanitizer/asan_interface.h>

#define __asan_poison_memory_region(addr, size) ((void)(addr), (void)(size))
#define __asan_unpoison_memory_region(addr, size) ((void)(addr), (void)(size))

#endif // KILN_COMPILER_SANITIZERCOMPAT_H
