"""Independent PyTorch implementations of the models Kiln trains.

Written from the Hugging Face `transformers` modelling code's math (Llama,
Mistral and Qwen2 share it; GPT-2 separately), with the same parameter names,
so that Kiln's losses, gradients and checkpoints can be compared with
PyTorch's. Plain torch, no `transformers` (not in Debian).
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F


# --- safetensors, read and written by hand (the format is 8 bytes of header
# --- length, a JSON header and raw little-endian data) ----------------------

_DTYPES = {"F32": (np.float32, 4), "I32": (np.int32, 4), "I64": (np.int64, 8),
           "BF16": (np.uint16, 2), "U16": (np.uint16, 2),
           "F16": (np.float16, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        np_type, _ = _DTYPES[entry["dtype"]]
        array = np.frombuffer(data[begin:end], dtype=np_type)
        if entry["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = torch.from_numpy(
            array.reshape(entry["shape"]).copy())
    return tensors


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        array = tensor.detach().cpu().contiguous().numpy()
        dtype = {np.float32: "F32", np.float16: "F16", np.int32: "I32",
                 np.int64: "I64"}[array.dtype.type]
        blob = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_token_shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


# --- models -----------------------------------------------------------------

def parameter_shapes(config):
    """Hugging Face parameter names and shapes, in Kiln's order."""
    arch = config["architectures"][0]
    shapes = {}
    if arch == "GPT2LMHeadModel":
        h, n = config["n_embd"], config["n_layer"]
        inner = config.get("n_inner") or 4 * h
        shapes["transformer.wte.weight"] = (config["vocab_size"], h)
        shapes["transformer.wpe.weight"] = (config.get("n_positions", 1024), h)
        for i in range(n):
            p = f"transformer.h.{i}."
            for ln in ("ln_1", "ln_2"):
                shapes[p + ln + ".weight"] = (h,)
                shapes[p + ln + ".bias"] = (h,)
            for name, shape in (("attn.c_attn", (h, 3 * h)),
                                ("attn.c_proj", (h, h)),
                                ("mlp.c_fc", (h, inner)),
                                ("mlp.c_proj", (inner, h))):
                shapes[p + name + ".weight"] = shape
                shapes[p + name + ".bias"] = (shape[1],)
        shapes["transformer.ln_f.weight"] = (h,)
        shapes["transformer.ln_f.bias"] = (h,)
        return shapes
    h, n = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads)
    d = config.get("head_dim", h // heads)
    inner = config["intermediate_size"]
    qkv_bias = arch == "Qwen2ForCausalLM" or config.get("attention_bias", False)
    shapes["model.embed_tokens.weight"] = (config["vocab_size"], h)
    for i in range(n):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        for proj, out in (("q_proj", heads * d), ("k_proj", kv * d),
                          ("v_proj", kv * d)):
            shapes[p + f"self_attn.{proj}.weight"] = (out, h)
            if qkv_bias:
                shapes[p + f"self_attn.{proj}.bias"] = (out,)
        shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (inner, h)
        shapes[p + "mlp.up_proj.weight"] = (inner, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inner)
    shapes["model.norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (config["vocab_size"], h)
    return shapes


def random_parameters(config, seed):
    generator = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in parameter_shapes(config).items():
        if len(shape) == 1:  # norms near 1, biases near 0, never constant
            base = 1.0 if name.endswith("norm.weight") or "ln_" in name and \
                name.endswith(".weight") else 0.0
            params[name] = base + 0.1 * torch.randn(shape, generator=generator)
        else:
            params[name] = 0.05 * torch.randn(shape, generator=generator)
    return params


def _rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rope(x, positions, heads, theta):
    b, s, width = x.shape
    d = width // heads
    x = x.view(b, s, heads, d)
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64,
                                             device=x.device) / d))
    angles = positions.to(torch.float64)[..., None] * inv_freq  # b, s, d/2
    cos = torch.cat([angles.cos()] * 2, -1).to(x.dtype)[:, :, None, :]
    sin = torch.cat([angles.sin()] * 2, -1).to(x.dtype)[:, :, None, :]
    rotated = torch.cat([-x[..., d // 2:], x[..., : d // 2]], -1)
    return (x * cos + rotated * sin).view(b, s, width)


def _attention(q, k, v, heads, kv_heads, scale=None, sdpa=False):
    """Causal attention. sdpa=True calls F.scaled_dot_product_attention
    (what a PyTorch user writes: fused kernels on a GPU, torch >= 2.0);
    otherwise the explicit softmax(QK^T)V the comparison tests check against."""
    b, s, _ = q.shape
    d = q.shape[-1] // heads
    q = q.view(b, s, heads, d).transpose(1, 2)
    k = k.view(b, s, kv_heads, d).transpose(1, 2)
    v = v.view(b, s, kv_heads, d).transpose(1, 2)
    if kv_heads != heads:  # grouped-query attention: repeat each KV head
        group = heads // kv_heads
        k = k[:, :, None].expand(b, kv_heads, group, s, d).reshape(b, heads, s, d)
        v = v[:, :, None].expand(b, kv_heads, group, s, d).reshape(b, heads, s, d)
    scale = scale or 1.0 / math.sqrt(d)
    if sdpa:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             scale=scale)
    else:
        scores = q @ k.transpose(-1, -2) * scale
        mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        out = scores.softmax(-1) @ v
    return out.transpose(1, 2).reshape(b, s, heads * d)


def loss(config, params, tokens, targets, dtype=torch.float32, sdpa=False):
    """Mean cross-entropy of the model on tokens -> targets ([batch, seq]).

    With dtype=torch.bfloat16 every parameter is cast at its use and every
    activation is BF16 (autocast-style mixed precision), losses in FP32.
    Every tensor it makes is on the tokens' device. sdpa: see _attention."""
    arch = config["architectures"][0]
    P = {name: p.to(dtype) for name, p in params.items()}
    b, s = tokens.shape
    positions = torch.arange(s, device=tokens.device).expand(b, s)
    if arch == "GPT2LMHeadModel":
        eps = config.get("layer_norm_epsilon", 1e-5)
        heads = config["n_head"]
        act = config.get("activation_function", "gelu_new")
        approximate = "none" if act == "gelu" else "tanh"
        x = P["transformer.wte.weight"][tokens] + \
            P["transformer.wpe.weight"][positions]
        for i in range(config["n_layer"]):
            p = f"transformer.h.{i}."

            def ln(t, name):
                return F.layer_norm(t, t.shape[-1:], P[p + name + ".weight"],
                                    P[p + name + ".bias"], eps)

            def conv1d(t, name):
                return t @ P[p + name + ".weight"] + P[p + name + ".bias"]

            qkv = conv1d(ln(x, "ln_1"), "attn.c_attn")
            q, k, v = qkv.split(qkv.shape[-1] // 3, dim=-1)
            x = x + conv1d(_attention(q, k, v, heads, heads, sdpa=sdpa), "attn.c_proj")
            hid = F.gelu(conv1d(ln(x, "ln_2"), "mlp.c_fc"),
                         approximate=approximate)
            x = x + conv1d(hid, "mlp.c_proj")
        x = F.layer_norm(x, x.shape[-1:], P["transformer.ln_f.weight"],
                         P["transformer.ln_f.bias"], eps)
        logits = x @ P["transformer.wte.weight"].T
    else:
        eps = config.get("rms_norm_eps", 1e-6)
        heads = config["num_attention_heads"]
        kv = config.get("num_key_value_heads", heads)
        theta = config.get("rope_theta", 10000.0)
        x = P["model.embed_tokens.weight"][tokens]
        for i in range(config["num_hidden_layers"]):
            p = f"model.layers.{i}."

            def lin(t, name):
                out = t @ P[p + name + ".weight"].T
                return out + P[p + name + ".bias"] \
                    if p + name + ".bias" in P else out

            n = _rms_norm(x, P[p + "input_layernorm.weight"], eps)
            q = _rope(lin(n, "self_attn.q_proj"), positions, heads, theta)
            k = _rope(lin(n, "self_attn.k_proj"), positions, kv, theta)
            v = lin(n, "self_attn.v_proj")
            x = x + lin(_attention(q, k, v, heads, kv, sdpa=sdpa), "self_attn.o_proj")
            n = _rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
            x = x + lin(F.silu(lin(n, "mlp.gate_proj")) *
                        lin(n, "mlp.up_proj"), "mlp.down_proj")
        x = _rms_norm(x, P["model.norm.weight"], eps)
        head = P.get("lm_head.weight", P["model.embed_tokens.weight"])
        logits = x @ head.T
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           targets.reshape(-1).long())
