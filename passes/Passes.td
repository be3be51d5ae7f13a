//===- Passes.td - Kiln passes ------------------------------*- tablegen -*-===//
//
// Every Kiln pass is declared here; kiln-opt registers them all through the
// generated registration. Names are kebab-case with the dialect as prefix.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES
#define KILN_PASSES

include "mlir/Pass/PassBase.td"

def NNAutodiffPass : Pass<"nn-autodiff", "mlir::ModuleOp"> {
  let summary = "Builds the training step: forward, backward (B and W) and AdamW";
  let description = [{
    Training needs the gradient of the loss with respect to every parameter,
    and an optimizer step. This pass takes the forward function (arguments
    marked `kiln.param = "<name>"` are parameters; it returns the scalar
    loss) and adds a function `train_step` that runs the forward pass, the
    backward pass and one AdamW update, leaving the forward function as it
    is.

    The backward pass is built by walking the forward ops in reverse and
    asking each for its operand gradients through
    `DifferentiableOpInterface`; the pass knows no op by name. Gradients
    reaching one value from several uses are summed.

    Every op of `train_step` is tagged `kiln.chunk`: `"F"` forward, `"B"`
    backward work that the gradient of an earlier layer's activations
    depends on, `"W"` backward work that only parameter gradients depend on
    (weight and bias gradients), `"O"` the optimizer. A pipeline schedule
    may delay W work to fill bubbles (zero-bubble scheduling); the split is
    derived from the dataflow, not from op kinds.

    `train_step` takes the forward arguments, then the first and second
    AdamW moments of every parameter (`kiln.exp_avg`, `kiln.exp_avg_sq`),
    then the learning rate, the 1-based step number and the gradient of
    the loss the backward starts from (`kiln.input = "lr"`, `"step"`,
    `"loss_scale"`: 1 for a step of one micro-batch, the micro-batch's share
    of the step's counted tokens with several), and returns the loss followed by the updated
    parameters and moments, each result marked like the argument it
    replaces. Gradients are clipped to a global norm of `max-grad-norm`;
    weight decay applies to parameters of rank 2 or more (matrices and
    embeddings), not to norms and biases.
  }];
  let options = [
    Option<"forwardName", "forward", "std::string", "\"forward\"",
           "Name of the forward function">,
    Option<"trainStepName", "train-step", "std::string", "\"train_step\"",
           "Name of the function to create">,
    Option<"beta1", "beta1", "double", "0.9", "AdamW first-moment decay">,
    Option<"beta2", "beta2", "double", "0.95", "AdamW second-moment decay">,
    Option<"epsilon", "epsilon", "double", "1.0e-8", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", "0.1",
           "Decoupled weight decay of matrices and embeddings">,
    Option<"maxGradNorm", "max-grad-norm", "double", "1.0",
           "Global gradient-norm clipping threshold (0 disables)">,
  ];
  let dependentDialects = ["::kiln::nn::NNDialect",
                           "::mlir::arith::ArithDialect"];
}

def NNPackProjectionsPass : Pass<"nn-pack-projections", "mlir::ModuleOp"> {
  let summary = "Packs the projections of one input into one GEMM";
  let description = [{
    A transformer layer projects the same normalized activations three
    times for attention (Q, K, V) and twice for a gated MLP (gate, up): as
    separate GEMMs each reads the activations again, and the backward runs
    a GEMM per projection for the input gradient, summed, and one per
    weight gradient. This pass, run on the forward pass before
    `nn-autodiff`, replaces every group of `nn.linear` ops that read the
    same input, each with its own parameter as weight (the argument, or its
    one cast to the compute type) and all with or without a bias, by one
    `nn.linear` over the weights concatenated along their output dimension
    (`nn.concat {dim = 0}`) and an `nn.split` of its output. nn-autodiff
    then gives one input-gradient GEMM (the sum over the projections is its
    reduction) and one weight-gradient GEMM whose rows are the parameters'
    gradients (`nn.split {dim = 0}`).

    The packed weight is no copy: `tile-fold-views` places the parameters
    (or their BF16 compute copies) side by side so that their concat is
    their memory, the split output is read in place through row-strided
    views and the parts' gradients are written into the packed gradient.
    The masters keep their Hugging Face names; checkpoints do not change.
    The maths is the same up to summation order: the input gradient sums
    its projections inside one GEMM's reduction (FP32 results agree to
    ~1e-6, not bitwise).

    `report` says what was packed where, layers grouped.
  }];
  let options = [
    Option<"report", "report", "bool", "false",
           "Emit what was packed where as remarks">,
  ];
  let dependentDialects = ["::kiln::nn::NNDialect"];
}

def NNTileAttentionPass : Pass<"nn-tile-attention", "mlir::ModuleOp"> {
  let summary = "Lowers attention to IO-aware FlashAttention kernels";
  let description = [{
    Naive attention materialises a seq x seq score matrix per head: memory
    quadratic in the sequence and, on a GPU, traffic that dwarfs the useful
    work. This pass lowers `nn.attention` and `nn.attention_grad` to
    `tile.flash_attention_fwd` / `tile.flash_attention_bwd` (FlashAttention-2:
    online softmax over K/V tiles, only the output and the per-row
    log-sum-exp saved, the probabilities recomputed tile by tile in the
    backward), with explicit block sizes, warps and pipeline stages. The
    sizes come from the tuning database when it has an entry for the
    target, head dimension and dtype (`kiln tune` writes it), else from the
    cost model: the largest tiles whose working set fits the target's shared
    memory (GPU) or L2 share (host). The backward reuses the forward kernel's
    output and log-sum-exp. `report` emits every choice as a remark at the
    attention's location, with where it came from and the predicted FLOPs
    and time; identical choices are one remark ("forward, layers 0-31:
    ..."), and an attention that both the forward function and the training
    step hold is reported once.
  }];
  let options = [
    Option<"target", "target", "std::string", "\"host\"",
           "Target whose memories size the tiles: host, a100, h100, h200">,
    Option<"tuningDb", "tuning-db", "std::string", "\"\"",
           "Tuning database (JSON) consulted before the cost model">,
    Option<"report", "report", "bool", "false",
           "Emit the tile sizes chosen, their source and the prediction as "
           "remarks">,
  ];
  let dependentDialects = ["::kiln::tile::TileDialect"];
}

def NNAccumulateGradientsPass
    : Pass<"nn-accumulate-gradients", "mlir::ModuleOp"> {
  let summary = "Gradient accumulation over the micro-batches of a step";
  let description = [{
    A batch that does not fit in memory at once is processed as
    `micro-batches` micro-batches of the compiled shape per optimizer step.
    The runtime runs the forward and backward chunks (F, B, W) of
    `train_step` once per micro-batch and the optimizer chunk (O) once,
    after the last; this pass makes the gradients the optimizer reads the
    sum over the micro-batches. It adds an FP32 accumulator per parameter
    (an argument marked `kiln.grad_accumulator = "<name>"`, and a result
    marked the same: it persists across micro-steps, like the moments) and
    the input `micro_step` (the 0-based micro-batch index), and puts one
    multi-tensor `nn.grad_accumulate` at the end of the W chunk: the
    optimizer (the gradient norm and AdamW) then reads the accumulators.
    Each micro-batch's gradient already carries its share of the step's
    mean loss (`loss_scale`, see nn-autodiff), so the accumulated gradient
    is that of the mean over the whole step, as one large batch computes
    it up to the order of the sum.

    With `micro-batches=1` the step is unchanged. Either way the pass
    records `micro_batches` in the module's `kiln.model`, which the plan
    carries to the runtime.

    ```mlir
    // after nn-autodiff, with micro-batches=4: the W chunk ends with
    %acc:2 = nn.grad_accumulate %a0, %a1, %g0, %g1, %micro_step {kiln.chunk = "W"}
        : (...) -> (tensor<64x64xf32>, tensor<64xf32>)
    %norm = nn.global_norm %acc#0, %acc#1 {kiln.chunk = "O"} : ...
    ```
  }];
  let options = [
    Option<"microBatches", "micro-batches", "int64_t", "1",
           "Micro-batches per optimizer step (1: no accumulation)">,
    Option<"trainStepName", "train-step", "std::string", "\"train_step\"",
           "The training step to change">,
  ];
  let dependentDialects = ["::kiln::nn::NNDialect"];
}

def DistReduceGradientsPass
    : Pass<"dist-reduce-gradients", "mlir::ModuleOp"> {
  let summary = "The data-parallel gradient reduction, bucketed";
  let description = [{
    Data parallelism runs the same step on `dp` ranks, each on its own
    slice of the global batch. Each rank's gradient already carries its
    share of the global batch's mean loss (`loss_scale`, see nn-autodiff),
    so the gradient of the step is the sum over the ranks: this pass sums
    the gradients the optimizer reads with `dist.all_reduce sum` over
    `#dist.group<"dp", dp>` before the optimizer chunk reads them.

    The gradients are grouped into buckets of about `bucket-mb` MiB (25, as
    PyTorch DDP's default) in the order the W chunk produces them (the last
    layers first); each bucket's reduction follows the op that produces its
    last gradient, so the runtime can send the late layers' gradients while
    the early layers' are still being computed. Under gradient
    accumulation (`nn-accumulate-gradients` with more than one micro-batch)
    the reductions follow the accumulation and are marked
    `last_micro_step`: they run once per step, on the sums.

    `zero=1` is ZeRO-1 (as llm.c's `zero.cuh`): each gradient is
    `dist.reduce_scatter`ed instead (same buckets), each rank updates only
    its shard of every parameter (`shards` on `nn.adamw_update`, whose
    moments become step arguments of the shard's size: the optimizer state
    is divided among the ranks), the gradient norm sums the ranks' shards
    (`shards` on `nn.global_norm`), and one `dist.all_gather` per bucket
    after the updates gives every rank every parameter again. The model's
    `zero` entry records it.

    With `dp=1` the step is unchanged, unless `single-rank` asks for the
    reductions anyway (each the identity: the communication path runs, to
    measure what it costs on one device). Either way the pass records
    `data_parallel` in the module's `kiln.model`, which the plan carries:
    the runtime refuses to run it on another number of ranks.

    ```mlir
    // dp=2: after the W op that produces the last gradient of a bucket
    %r:2 = dist.all_reduce sum %g0, %g1 : tensor<64x64xf32>, tensor<64xf32>
        over #dist.group<"dp", 2> {kiln.chunk = "W"}
    %norm = nn.global_norm %r#0, %r#1 {kiln.chunk = "O"} : ...
    ```
  }];
  let options = [
    Option<"dataParallel", "dp", "int64_t", "1",
           "Data-parallel ranks (1: no reduction)">,
    Option<"bucketMiB", "bucket-mb", "double", "25.0",
           "Bucket size in MiB: gradients reduced together">,
    Option<"trainStepName", "train-step", "std::string", "\"train_step\"",
           "The training step to change">,
    Option<"report", "report", "bool", "false",
           "Emit a remark per bucket: its gradients, bytes and position">,
    Option<"singleRank", "single-rank", "bool", "false",
           "Insert the reductions with dp=1 too (each the identity)">,
    Option<"zero", "zero", "int64_t", "0",
           "ZeRO stage: 0 (all-reduce) or 1 (optimizer state sharded)">,
  ];
  let dependentDialects = ["::kiln::dist::DistDialect"];
}

def NNFusePass : Pass<"nn-fuse", "mlir::ModuleOp"> {
  let summary = "Groups row-wise nn ops into tile.fused kernels";
  let description = [{
    Every elementwise or row-wise op run as its own kernel reads its inputs
    from memory and writes its result back; a layer of a transformer has a
    dozen such ops, forward and backward. This pass groups them into
    `tile.fused` regions, each of which becomes one kernel that makes one
    pass over the rows of its tensors (a block per row on the GPU, a
    parallel loop over rows on the host), keeping what only the region
    reads on chip.

    Groups, each of which an option switches off:
    - `residual-norm`: a residual add and the RMSNorm or LayerNorm of its sum
      in one kernel that writes both the sum and the normalized rows; in the
      backward, the norm's input gradient with the gradient accumulations
      around it (the sum of the branch gradients it reads, the residual
      gradient it adds to).
    - `rope`: the rotary embeddings of Q and K (forward and inverse) that
      read the same positions, in one kernel.
    - `rope-attention`: the RoPE of Q and K moves into the attention that
      reads them: `nn.attention` takes the unrotated projections and an
      `nn.rope_table` (the cosines and sines, `[batch, seq, head_dim]` FP32,
      one per step for every layer) and rotates each Q and K tile as it
      loads it; its gradient rotates dq and dk back as it stores them. The
      rotated Q and K are never stored. Only where nothing else reads the
      rotated Q and K and nothing else the gradients before the inverse
      RoPE; otherwise the `rope` group below pairs the two RoPEs. In a BF16
      step the rotated Q and K are rounded to BF16 as the unfused RoPE
      stores them; dq and dk are rounded once, after the inverse rotation,
      instead of before and after it (the rounding point this group
      removes; FP32 is bitwise the unfused step).
    - `elementwise`: chains of elementwise ops (adds, casts, activations)
      and embedding gathers with their consumers.
    - `optimizer`: the AdamW updates of the step that share their
      hyperparameters (two groups: the matrices and embeddings with weight
      decay, the norms and biases without) as one multi-tensor `tile.adamw`
      each: two kernels (a handful of launches on the GPU) instead of one
      per parameter, after the one multi-tensor gradient-norm reduction.
      In a BF16 step the update also writes each weight's BF16 compute copy,
      which the step keeps across steps instead of a cast kernel per weight
      per step; `compute-copies=false` trades those kernels back for the
      memory (2 bytes per parameter, persistent).
    - `epilogue`: a weight gradient (`nn.linear_weight_grad`, a bias's
      `nn.column_sum`, `nn.embedding_grad`, a norm's weight gradient) whose
      only use widens it to FP32
      for the optimizer is written in FP32 by its own kernel, which
      accumulates in FP32 anyway: the cast kernel goes, and so does the
      BF16 rounding of the gradient (the one rounding point fusion removes;
      `--fusion=off` keeps it).
    - `gemm-epilogue`: what cuBLASLt computes in a GEMM's epilogue, from
      the FP32 accumulator, instead of a kernel of its own (on the host,
      in the GEMM's step right after the product): a linear layer's GELU
      with its bias (`tile.gemm` epilogue `gelu_tanh`, which also writes
      the pre-activation the backward reads); GELU's input gradient of the
      input-gradient GEMM that precedes it (`dgelu_tanh`); a bias gradient
      (`nn.column_sum` of an output gradient) with the weight-gradient GEMM
      of the same gradient (`bgrad_a`/`bgrad_b`). Only the tanh GELU
      (cuBLASLt's); in BF16 the GEMM's output is no longer rounded before
      the GELU or its gradient is applied (the rounding point this group
      removes; FP32 is bitwise the unfused step).
    - `norm-param-grads`: a LayerNorm's weight gradient and its bias
      gradient (`nn.column_sum` of the same output gradient) as one
      region: one kernel that reads the gradient once for both column
      reductions (on the host too: one pass, the same sums in the same
      order as the two unfused kernels).
    - `linear-cross-entropy`: the LM head (`nn.linear` without bias), its
      `nn.cross_entropy`, the loss gradient and the two GEMMs that read the
      logits' gradient (the input gradient and the weight gradient) become
      one `tile.linear_cross_entropy`, which works through the tokens in
      chunks: the chunk's logits in an FP32 scratch, their log-sum-exp and
      loss, their gradient in place, the chunk's input gradient and its
      share of the weight gradient (FP32 accumulation). The `[tokens,
      vocab]` logits and their gradient (the largest buffers of a step
      with a large vocabulary) are never stored. Only where the logits
      feed nothing but the loss and its gradient, and that gradient
      nothing but the two GEMMs; the chunk's logits take at most about the
      bytes of the `[tokens, hidden]` activations (in multiples of 64 rows,
      at least 64: fewer would re-read the weight for a few rows of work)
      unless `cross-entropy-chunk-rows` says.
      In a BF16 step the chunk's logits are rounded to BF16 as the unfused
      GEMM stores them (fusion keeps the step's numerics);
      `cross-entropy-fp32-logits` keeps them in FP32.
      ```mlir
      // before
      %logits = nn.linear %h, %w : (tensor<2x16x64xf32>, tensor<256x64xf32>) -> tensor<2x16x256xf32>
      %loss = nn.cross_entropy %logits, %t : ... -> tensor<f32>
      %dl = nn.cross_entropy_grad %one, %logits, %t : ... -> tensor<2x16x256xf32>
      %dh = nn.linear %dl, %w {transpose_weight} : ... -> tensor<2x16x64xf32>
      %dw = nn.linear_weight_grad %dl, %h : ... -> tensor<256x64xf32>
      // after
      %loss, %dh, %dw, %scratch = tile.linear_cross_entropy %h, %w, %t, %one {chunk_rows = 16 : i64, ignore_index = -100 : i64}
          : ... -> (tensor<f32>, tensor<2x16x64xf32>, tensor<256x64xf32>, tensor<16x256xf32>)
      ```
      The op is tagged `"B"`: the LM head's weight gradient is no longer
      separate W work that a zero-bubble schedule could delay.

    An op joins the group of one of its operands' producers when both are
    row-local (`tile::isRowLocal`), in the same chunk (`kiln.chunk`), over
    the same rows, when what the op reads whole (a norm's weight) comes from
    outside the group, and when every other consumer of the group's values
    comes after it: the region is placed at its last op, so a value needed
    earlier stays a kernel of its own. A region yields every value that is
    used outside it. Nothing is reordered inside a region: the host computes
    exactly what the unfused ops compute, bit for bit in FP32.

    `report` emits one remark per kind of region at the location of its
    anchor op (the norm, else the first op), grouped across layers.
  }];
  let options = [
    Option<"residualNorm", "residual-norm", "bool", "true",
           "Fuse residual adds with RMSNorm/LayerNorm, forward and backward">,
    Option<"rope", "rope", "bool", "true",
           "Fuse the RoPE of Q and K that share positions">,
    Option<"ropeAttention", "rope-attention", "bool", "true",
           "Rotate Q and K inside the attention's load (and dq, dk back in "
           "its gradient's store) instead of RoPE kernels">,
    Option<"elementwise", "elementwise", "bool", "true",
           "Fuse chains of elementwise ops and embedding gathers">,
    Option<"optimizer", "optimizer", "bool", "true",
           "Update every parameter in one multi-tensor AdamW per group">,
    Option<"computeCopies", "compute-copies", "bool", "true",
           "With the optimizer group, keep each weight's BF16 compute copy "
           "across steps (written by AdamW: no cast kernels); false casts "
           "them every step into temporaries instead (less memory)">,
    Option<"epilogue", "epilogue", "bool", "true",
           "Write weight gradients in FP32 from their kernels' accumulators">,
    Option<"gemmEpilogue", "gemm-epilogue", "bool", "true",
           "Compute GELU (tanh) and its gradient, and bias gradients, in the "
           "epilogues of the GEMMs they follow">,
    Option<"normParamGrads", "norm-param-grads", "bool", "true",
           "Compute a LayerNorm's weight and bias gradients in one kernel">,
    Option<"linearCrossEntropy", "linear-cross-entropy", "bool", "true",
           "Fuse the LM head, the loss and their gradients into one chunked "
           "op that never stores the logits">,
    Option<"crossEntropyChunkRows", "cross-entropy-chunk-rows", "int64_t",
           "0",
           "Tokens per chunk of linear-cross-entropy (0: chosen so that a "
           "chunk's FP32 logits are at most the [tokens, hidden] activations)">,
    Option<"crossEntropyFp32Logits", "cross-entropy-fp32-logits", "bool",
           "false",
           "In BF16 steps, keep linear-cross-entropy's logits in FP32 (more "
           "accurate) instead of rounding them to BF16 as the unfused step "
           "stores them (the same numerics)">,
    Option<"report", "report", "bool", "false",
           "Emit what was fused where as remarks">,
  ];
  let dependentDialects = ["::kiln::tile::TileDialect"];
}

def NNLowerToTilePass : Pass<"nn-lower-to-tile", "mlir::ModuleOp"> {
  let summary = "Lowers the nn training step to kernel-granularity tile ops";
  let description = [{
    Decides what becomes one kernel. Linear layers, their weight gradients
    and batched matmuls become `tile.gemm` with explicit geometry (batch, m,
    n, k), layouts and a bias epilogue; losses, embedding
    gradients, the gradient norm and AdamW become their kernels; every other
    op is elementwise or row-wise and is wrapped in its own `tile.fused`
    region, for `nn-fuse` to merge. `kiln.chunk` tags carry over. All shapes
    must be static; attention must already be lowered by nn-tile-attention.

    A partial conversion: every nn op outside a `tile.fused` region is
    illegal, so an op with no lowering fails the pass at its location.
  }];
  let dependentDialects = ["::kiln::tile::TileDialect"];
}

def TileFoldViewsPass : Pass<"tile-fold-views", "mlir::ModuleOp"> {
  let summary = "Reads and writes packed tensors in place instead of copying";
  let description = [{
    A packed GEMM output (GPT-2's `c_attn` QKV) is split into its parts,
    and the parts' gradients are concatenated back for the backward GEMMs:
    two copies of the whole tensor per layer. This pass removes them where
    the kernels around them read and write row-strided operands (the
    attention kernels' Q, K and V and their gradients; the row-wise
    `tile.fused` regions' row operands, see `tile::readsRowStrided`):
    - a `tile.fused` region holding only an `nn.split` becomes one
      `tile.view` per part, which its consumers read in place;
    - a region holding only an `nn.concat` becomes a `tile.concat`: the
      memory planner places its inputs inside its buffer, so the kernels
      that produce them write there.
    Every other split and concat stays a copy. Nothing is computed
    differently: the same kernels run on the same values.

    `report` says, per split and concat, grouped across layers, which were
    folded and why the others were not.
  }];
  let options = [
    Option<"report", "report", "bool", "false",
           "Emit what was folded and why as remarks">,
  ];
  let dependentDialects = ["::kiln::tile::TileDialect"];
}

def TilePlanMemoryPass : Pass<"tile-plan-memory", "mlir::ModuleOp"> {
  let summary = "Assigns every tensor of the training step an arena offset";
  let description = [{
    The runtime runs a step in one preallocated arena, so that no kernel
    allocates. Function arguments (parameters, optimizer moments, inputs)
    get their own persistent buffers (the arguments a `tile.concat` packs
    side by side back to back, so that the concat is their buffer); every
    other value gets an offset that it shares with values whose lifetimes
    do not overlap (best fit in program order, buffers freed after their
    last use). A `tile.view` is an offset into its source's buffer and the
    inputs of a `tile.concat` offsets into the concat's, allocated when the
    first of them is defined and freed after the last use of any.
    `tile.adamw` updates in place: its results take the offsets of the
    tensors they replace.

    Attributes written: `kiln.offset` on each argument, `kiln.offsets` on
    each op with results, `kiln.arena_bytes` and `kiln.persistent_bytes` on
    the function. With `report`, a remark at the function gives the arena's
    size and peak, with a note at the largest buffer's producer.
  }];
  let options = [
    Option<"function", "function", "std::string", "\"train_step\"",
           "Function to plan">,
    Option<"alignment", "alignment", "int64_t", "256",
           "Byte alignment of every buffer (a GPU's preferred vector access)">,
    Option<"report", "report", "bool", "false",
           "Emit what was planned and why as remarks">,
  ];
}

#endif // KILN_PASSES
