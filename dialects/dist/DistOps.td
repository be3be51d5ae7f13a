//===- DistOps.td - dist dialect operations -----------------*- tablegen -*-===//

#ifndef KILN_DIST_OPS
#define KILN_DIST_OPS

include "dialects/dist/DistDialect.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

class Dist_Op<string mnemonic, list<Trait> traits = []> :
    Op<Dist_Dialect, mnemonic, traits>;

// Collectives and transfers have no side-effect traits on purpose: they are
// never hoisted, merged or dropped, so every rank issues the same
// communication in the same order.

def Dist_AllReduceOp : Dist_Op<"all_reduce",
    [DeclareOpInterfaceMethods<InferTypeOpInterface>]> {
  let summary = "Combines each tensor across the ranks of a group";
  let description = [{
    Every rank of `group` ends with the element-wise `reduction` of all the
    ranks' values of each operand: result `i` has operand `i`'s type. One op
    reduces a bucket of tensors (the runtime issues them together: one NCCL
    group, or MPI requests completed together); after `tile-plan-memory`
    each result lies where its operand does (the reduction is in place).

    `last_micro_step` (set by `dist-reduce-gradients`): under gradient
    accumulation the reduction runs only in the step's last micro-batch,
    on the accumulated sums.

    ```mlir
    %r:2 = dist.all_reduce sum %g0, %g1 : tensor<64x64xf32>, tensor<64xf32>
        over #dist.group<"dp", 4>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs,
                       Dist_Reduction:$reduction, Dist_GroupAttr:$group,
                       UnitAttr:$last_micro_step);
  let results = (outs Variadic<AnyRankedTensor>:$outputs);
  let assemblyFormat = [{
    $reduction $inputs `:` type($inputs) `over` qualified($group) attr-dict
  }];
  let hasVerifier = 1;
}

def Dist_ReduceScatterOp : Dist_Op<"reduce_scatter",
    [DeclareOpInterfaceMethods<InferTypeOpInterface>]> {
  let summary = "Reduces each tensor across a group, each rank keeping its shard";
  let description = [{
    ZeRO-1's gradient reduction. Each operand is seen flattened and split
    into `group.size` shards of `ceil(n / size)` elements (the last ones
    shorter, or empty): in result `i`, the shard of rank `r` of the group
    holds the element-wise `reduction` of all the ranks' values of operand
    `i`, and every other element keeps this rank's value. Results have the
    operands' types; one op is a bucket, as for `all_reduce`, and after
    `tile-plan-memory` each result lies where its operand does (in place).
    `last_micro_step` as for `all_reduce`.

    ```mlir
    %s:2 = dist.reduce_scatter sum %g0, %g1 : tensor<64x64xf32>, tensor<64xf32>
        over #dist.group<"dp", 4>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs,
                       Dist_Reduction:$reduction, Dist_GroupAttr:$group,
                       UnitAttr:$last_micro_step);
  let results = (outs Variadic<AnyRankedTensor>:$outputs);
  let assemblyFormat = [{
    $reduction $inputs `:` type($inputs) `over` qualified($group) attr-dict
  }];
  let hasVerifier = 1;
}

def Dist_AllGatherOp : Dist_Op<"all_gather",
    [DeclareOpInterfaceMethods<InferTypeOpInterface>]> {
  let summary = "Gathers every rank's shard of each tensor on every rank";
  let description = [{
    The other half of `reduce_scatter`: with the same shards (each operand
    flattened, `ceil(n / size)` elements per rank), shard `r` of result `i`
    is rank `r`'s shard of operand `i`, on every rank of `group`. ZeRO-1
    gathers the parameters this way after each rank updated its shard. In
    place after `tile-plan-memory`, like the other collectives.

    ```mlir
    %p:2 = dist.all_gather %w0, %w1 : tensor<64x64xf32>, tensor<64xf32>
        over #dist.group<"dp", 4>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$inputs,
                       Dist_GroupAttr:$group);
  let results = (outs Variadic<AnyRankedTensor>:$outputs);
  let assemblyFormat = [{
    $inputs `:` type($inputs) `over` qualified($group) attr-dict
  }];
  let hasVerifier = 1;
}

def Dist_AllGatherIntoOp : Dist_Op<"all_gather_into", [AttrSizedOperandSegments]> {
  let summary = "Gathers every rank's shard into a whole tensor on every rank";
  let description = [{
    ZeRO-1 with sharded master weights: operand `shards[i]` is this rank's
    shard of a tensor (1-D, `ceil(n / size)` elements, only the first as
    many as the shard holds used), `dests[i]` the whole tensor it belongs to
    (`n` elements of the same element type). Result `i` is `dests[i]` with
    shard `r` taken from rank `r`'s `shards[i]`: the BF16 compute copies,
    rebuilt from the ranks' updated master shards. After `tile-plan-memory`
    each result lies where its destination does (in place).

    ```mlir
    %c:2 = dist.all_gather_into %s0, %s1 into %c0, %c1
        : tensor<1024xbf16>, tensor<16xbf16> into tensor<64x64xbf16>, tensor<64xbf16>
        -> tensor<64x64xbf16>, tensor<64xbf16> over #dist.group<"dp", 4>
    ```
  }];
  let arguments = (ins Variadic<AnyRankedTensor>:$shards,
                       Variadic<AnyRankedTensor>:$dests,
                       Dist_GroupAttr:$group);
  let results = (outs Variadic<AnyRankedTensor>:$outputs);
  let assemblyFormat = [{
    $shards `into` $dests `:` type($shards) `into` type($dests) `->`
    type($outputs) `over` qualified($group) attr-dict
  }];
  let hasVerifier = 1;
}

def Dist_SendOp : Dist_Op<"send"> {
  let summary = "Sends a tensor to another rank";
  let description = [{
    Sends `input` to rank `peer`; the peer's `dist.recv` with the same `tag`
    and this rank as its peer receives it. Pipeline stages pass activations
    forward and their gradients backward this way.

    ```mlir
    dist.send %x to 1 tag 0 : tensor<4x64x256xbf16>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$input, I64Attr:$peer, I64Attr:$tag);
  let assemblyFormat = [{
    $input `to` $peer `tag` $tag attr-dict `:` type($input)
  }];
  let hasVerifier = 1;
}

def Dist_RecvOp : Dist_Op<"recv"> {
  let summary = "Receives a tensor from another rank";
  let description = [{
    Receives the tensor rank `peer` sends with `dist.send` and the same
    `tag`; its type must be the one sent (the runtime checks the size).

    ```mlir
    %x = dist.recv from 0 tag 0 : tensor<4x64x256xbf16>
    ```
  }];
  let arguments = (ins I64Attr:$peer, I64Attr:$tag);
  let results = (outs AnyRankedTensor:$output);
  let assemblyFormat = [{
    `from` $peer `tag` $tag attr-dict `:` type($output)
  }];
  let hasVerifier = 1;
}

def Dist_ScheduleOp : Dist_Op<"schedule", [
    HasParent<"mlir::ModuleOp">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "The order in which each rank runs the chunks of a step";
  let description = [{
    For the training function `step`, split into `stages` pipeline stages
    and run on `micro_batches` micro-batches per optimizer step: `ranks`
    holds, for each rank, its ordered actions (`#dist.action<kind, stage,
    micro_batch>`). The verifier checks what any correct schedule
    satisfies: every stage lives on one rank; every stage runs F, B and W
    exactly once per micro-batch, in that order, and O once, after its last
    W. Which interleaving (1F1B, zero-bubble, DualPipe) is the scheduling
    pass's choice.

    One stage on one rank with two micro-batches (gradient accumulation):

    ```mlir
    dist.schedule @train_step stages 1 micro_batches 2 ranks [[
        #dist.action<F, 0, 0>, #dist.action<B, 0, 0>, #dist.action<W, 0, 0>,
        #dist.action<F, 0, 1>, #dist.action<B, 0, 1>, #dist.action<W, 0, 1>,
        #dist.action<O, 0, 0>]]
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$step, I64Attr:$stages,
                       I64Attr:$micro_batches,
                       TypedArrayAttrBase<ArrayAttr, "actions per rank">:$ranks);
  let assemblyFormat = [{
    $step `stages` $stages `micro_batches` $micro_batches `ranks` $ranks
    attr-dict
  }];
  let hasVerifier = 1;
}

#endif // KILN_DIST_OPS
