// RUN: kiln-opt --show-dialects | FileCheck %s

// kiln-opt registers the Kiln dialects and the upstream ones Kiln IR uses.
// CHECK: Available Dialects:
// CHECK-DAG: arith
// CHECK-DAG: func
// CHECK-DAG: nn
// CHECK-DAG: tensor
