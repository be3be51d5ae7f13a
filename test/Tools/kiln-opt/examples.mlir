// RUN: kiln-opt %S/../../../examples/attention_block.mlir | FileCheck %s

// The IR examples of the README parse and verify.
// CHECK-LABEL: func.func @attention_block
// CHECK: nn.rope %{{.*}} {num_heads = 8 : i64
// CHECK: nn.rope %{{.*}} {num_heads = 2 : i64
// CHECK: nn.attention %{{.*}} {causal, num_heads = 8 : i64, num_kv_heads = 2 : i64}
