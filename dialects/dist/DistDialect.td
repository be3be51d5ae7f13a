//===- DistDialect.td - The dist dialect --------------------*- tablegen -*-===//
//
// Communication between the ranks of a training job: collectives over a
// group of ranks, point-to-point transfers between pipeline stages, and the
// schedule of chunk runs per rank.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_DIST_DIALECT
#define KILN_DIST_DIALECT

include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/OpBase.td"

def Dist_Dialect : Dialect {
  let name = "dist";
  let cppNamespace = "::kiln::dist";
  let summary = "Collectives, point-to-point transfers and schedules across ranks";
  let description = [{
    A training job runs one process per device (a rank). The `dist` dialect
    says what the ranks exchange and when: collectives over a group of ranks
    (`all_reduce`, `reduce_scatter`, `all_gather`: the data-parallel
    gradient reduction, ZeRO's sharded updates), transfers between the
    ranks that hold consecutive pipeline stages (`send`, `recv`), and, per
    rank, the order in which it runs the forward (F), input-gradient (B),
    weight-gradient (W) and optimizer (O) chunks of each micro-batch
    (`schedule`).

    The ops work on builtin tensors, like `nn`'s, and stay through the
    lowering to `tile`: each is one communication step of the plan, which
    the runtime gives to MPI (host backend) or NCCL (cuda backend). A
    collective's group names the ranks it spans and how many they are; the
    compiler fixes the size, so shapes are static, and the runtime checks
    it against the world it was launched in.
  }];
  let useDefaultAttributePrinterParser = 1;
}

//===----------------------------------------------------------------------===//
// Enums and attributes
//===----------------------------------------------------------------------===//

def Dist_Reduction : I32EnumAttr<"Reduction",
    "how a collective combines the ranks' values", [
      I32EnumAttrCase<"sum", 0>,
      I32EnumAttrCase<"avg", 1>,
      I32EnumAttrCase<"max", 2>,
      I32EnumAttrCase<"min", 3>
    ]> {
  let cppNamespace = "::kiln::dist";
}

def Dist_Chunk : I32EnumAttr<"Chunk",
    "the part of a training step a schedule action runs", [
      I32EnumAttrCase<"F", 0>,
      I32EnumAttrCase<"B", 1>,
      I32EnumAttrCase<"W", 2>,
      I32EnumAttrCase<"O", 3>
    ]> {
  let cppNamespace = "::kiln::dist";
  let genSpecializedAttr = 0;
}

class Dist_Attr<string name, string attrMnemonic> :
    AttrDef<Dist_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def Dist_GroupAttr : Dist_Attr<"Group", "group"> {
  let summary = "A group of ranks a collective spans";
  let description = [{
    The ranks of one kind of parallelism (`"dp"`: the data-parallel
    replicas) and how many they are. Every rank of the group runs the same
    collectives in the same order.

    ```mlir
    #dist.group<"dp", 4>
    ```
  }];
  let parameters = (ins StringRefParameter<"the group's name">:$name,
                        "int64_t":$size);
  let assemblyFormat = "`<` $name `,` $size `>`";
  let genVerifyDecl = 1;
}

def Dist_ActionAttr : Dist_Attr<"Action", "action"> {
  let summary = "One chunk run of a schedule";
  let description = [{
    Runs chunk `kind` of pipeline stage `stage` for micro-batch
    `micro_batch` (the optimizer, `O`, runs once per step: its micro-batch
    is 0).

    ```mlir
    #dist.action<F, 0, 3>
    ```
  }];
  let parameters = (ins EnumParameter<Dist_Chunk>:$kind, "int64_t":$stage,
                        "int64_t":$micro_batch);
  let assemblyFormat = "`<` $kind `,` $stage `,` $micro_batch `>`";
  let genVerifyDecl = 1;
}

#endif // KILN_DIST_DIALECT
