"""Trains a small byte-level Llama (transformers' LlamaForCausalLM) on English
text from Debian packages (bench/kv_corpus.py), then writes raw KV dumps of it
and of the random-weight Llama-3.1-8B-shaped model in the layout of a kvstash
chunk payload, and measures what the codec and general-purpose compressors
make of them (bench/codec_ratios.sh runs it on the GPU machine).

Nothing is downloaded.  The trained decoder exists so that the compression
ratios of issue 13 are measured on KV with real structure, not only on the KV
of random weights; how it was obtained is in docs/codec.md.

Dumps (under --work/dumps): one file per model and dtype, the KV of several
sequences cut into 256-token chunks, each chunk as kvstash stores it:
[layer][K, V][token][kv_head * head_dim].  bf16: the model run in bf16; fp16:
the same weights run in fp16; fp8: the bf16 KV cast to torch.float8_e4m3fn
with scale 1.0 (what vLLM's fp8 KV cache stores when no scales are given).

The pure-torch model below (--mini) exists ONLY to smoke-test this script on a
machine without transformers (the CPU build machine); the GPU run always uses
LlamaForCausalLM.
"""
import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import kv_corpus  # noqa: E402
from kv_ratio_est import FRAME, cli_ratios, py_ratios  # noqa: E402

CHUNK_TOKENS = 256
VOCAB = 256          # bytes


def log(*a):
    print(*a, flush=True)


# ---- models ------------------------------------------------------------------
def trained_config(a):
    return dict(vocab_size=VOCAB, hidden_size=a.hidden, intermediate_size=a.ffn,
                num_hidden_layers=a.layers, num_attention_heads=a.heads,
                num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
                max_position_embeddings=max(8192, a.seq), rope_theta=10000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=False)


def llama_8b_config(layers):
    """bench/e2e_transformers.py build_model("8b"), with `layers` layers."""
    return dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, max_position_embeddings=131072, rope_theta=500000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=False)


def hf_model(conf, device, dtype):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**conf)
    try:
        cfg._attn_implementation = "sdpa"
    except Exception:  # older or newer transformers: its default stays
        pass
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            m = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return m


class _MiniLayer(torch.nn.Module):
    def __init__(s, c):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        s.nh, s.nkv, s.d = c["num_attention_heads"], c["num_key_value_heads"], d
        s.q = torch.nn.Linear(h, s.nh * d, bias=False)
        s.k = torch.nn.Linear(h, s.nkv * d, bias=False)
        s.v = torch.nn.Linear(h, s.nkv * d, bias=False)
        s.o = torch.nn.Linear(s.nh * d, h, bias=False)
        s.g = torch.nn.Linear(h, c["intermediate_size"], bias=False)
        s.u = torch.nn.Linear(h, c["intermediate_size"], bias=False)
        s.dn = torch.nn.Linear(c["intermediate_size"], h, bias=False)
        s.n1 = torch.nn.Parameter(torch.ones(h))
        s.n2 = torch.nn.Parameter(torch.ones(h))


class MiniLlama(torch.nn.Module):
    """A Llama-like decoder in plain torch (RMSNorm, RoPE, GQA, SwiGLU) for
    the CPU smoke test only.  forward(ids) -> (logits, [(K, V)] per layer,
    each [B, kv_heads, T, head_dim], K after RoPE as in transformers)."""

    def __init__(s, c):
        super().__init__()
        s.c = c
        s.emb = torch.nn.Embedding(c["vocab_size"], c["hidden_size"])
        s.layers = torch.nn.ModuleList(_MiniLayer(c) for _ in range(c["num_hidden_layers"]))
        s.norm = torch.nn.Parameter(torch.ones(c["hidden_size"]))
        s.head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    @staticmethod
    def _rms(x, w):
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * w

    def _rope(s, x, T):
        d = x.shape[-1]
        inv = 1.0 / (s.c["rope_theta"] ** (torch.arange(0, d, 2, device=x.device).float() / d))
        f = torch.outer(torch.arange(T, device=x.device).float(), inv)
        cos = torch.cat([f.cos(), f.cos()], -1).to(x.dtype)
        sin = torch.cat([f.sin(), f.sin()], -1).to(x.dtype)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def forward(s, ids):
        B, T = ids.shape
        x = s.emb(ids)
        mask = torch.full((T, T), float("-inf"), device=ids.device).triu(1)
        kv = []
        for L in s.layers:
            h = s._rms(x, L.n1)
            q = L.q(h).view(B, T, L.nh, L.d).transpose(1, 2)
            k = L.k(h).view(B, T, L.nkv, L.d).transpose(1, 2)
            v = L.v(h).view(B, T, L.nkv, L.d).transpose(1, 2)
            q, k = s._rope(q, T), s._rope(k, T)
            kv.append((k, v))
            rep = L.nh // L.nkv
            kk, vv = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
            att = (q @ kk.transpose(-1, -2)).float() / math.sqrt(L.d) + mask
            y = (att.softmax(-1).to(vv.dtype) @ vv).transpose(1, 2).reshape(B, T, -1)
            x = x + L.o(y)
            h = s._rms(x, L.n2)
            x = x + L.dn(F.silu(L.g(h)) * L.u(h))
        return s.head(s._rms(x, s.norm)), kv


def recast(model, conf, device, dtype, mini):
    """model's weights in a model built in dtype.  Built, not cast with
    .to(dtype): transformers keeps the rotary inv_freq buffer (not in the
    state_dict) in fp32 when the model is built in bf16/fp16, as
    bench/e2e_transformers.py builds it; .to() would round it too."""
    if mini:
        m = copy.deepcopy(model).to(dtype=dtype)
    else:
        m = hf_model(conf, device, dtype)
        m.load_state_dict(model.state_dict())
    return m.eval()


def logits_of(model, x):
    if isinstance(model, MiniLlama):
        return model(x)[0]
    return model(input_ids=x, use_cache=False).logits


@torch.no_grad()
def kv_of(model, ids):
    """[(K, V)] per layer for ids [1, T]: each [1, kv_heads, T, head_dim]."""
    if isinstance(model, MiniLlama):
        return model(ids)[1]
    from transformers import DynamicCache
    out = model.model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
    c = out.past_key_values
    n = model.config.num_hidden_layers
    if hasattr(c, "layers"):
        return [(c.layers[l].keys, c.layers[l].values) for l in range(n)]
    if hasattr(c, "key_cache"):
        return [(c.key_cache[l], c.value_cache[l]) for l in range(n)]
    return [(c[l][0], c[l][1]) for l in range(n)]


# ---- corpus, unigram, training ----------------------------------------------
def unigram_nats(train, val):
    cnt = np.bincount(np.frombuffer(train, np.uint8), minlength=256).astype(np.float64) + 1.0
    p = cnt / cnt.sum()
    v = np.bincount(np.frombuffer(val, np.uint8), minlength=256)
    return float(-(v * np.log(p)).sum() / v.sum())


@torch.no_grad()
def eval_nats(model, val, seq, windows, device, amp):
    model.eval()
    n = min(windows, (len(val) - 1) // seq)
    tot, cnt = 0.0, 0
    for i in range(0, n, 8):
        starts = [j * seq for j in range(i, min(n, i + 8))]
        x = torch.stack([val[s:s + seq] for s in starts]).to(device).long()
        y = torch.stack([val[s + 1:s + seq + 1] for s in starts]).to(device).long()
        with amp():
            lg = logits_of(model, x)
        tot += float(F.cross_entropy(lg.float().reshape(-1, VOCAB), y.reshape(-1),
                                     reduction="sum"))
        cnt += y.numel()
    model.train()
    return tot / max(cnt, 1)


def train(a, model, tr, va, device, amp):
    opt_kw = dict(lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    if device == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW(model.parameters(), **opt_kw)
    g = torch.Generator().manual_seed(7)
    span = torch.arange(a.seq + 1, device=device)
    model.train()
    t0 = time.time()
    step, last_log, hist = 0, t0, []
    while True:
        el = time.time() - t0
        if el >= a.train_s or (a.max_steps and step >= a.max_steps):
            break
        frac = el / a.train_s
        lr = a.lr * min(1.0, (step + 1) / a.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        off = torch.randint(0, len(tr) - a.seq - 1, (a.batch, 1), generator=g).to(device)
        w = tr[off + span].long()
        with amp():
            lg = logits_of(model, w[:, :-1])
        loss = F.cross_entropy(lg.float().reshape(-1, VOCAB), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if time.time() - last_log >= a.log_s or step == 1:
            last_log = time.time()
            lv = float(loss)
            hist.append((round(last_log - t0, 1), step, round(lv, 4)))
            log("train t=%.0fs step %d tokens %.1fM loss %.3f nats/byte lr %.2e"
                % (last_log - t0, step, step * a.batch * a.seq / 1e6, lv, lr))
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.time() - t0
    log("trained %d steps, %.1fM tokens in %.1f s (%.0f tokens/s)" % (
        step, step * a.batch * a.seq / 1e6, secs, step * a.batch * a.seq / secs))
    return dict(steps=step, seconds=round(secs, 1), tokens=step * a.batch * a.seq,
                batch=a.batch, seq=a.seq, lr=a.lr, history=hist)


# ---- dumps --------------------------------------------------------------------
def to_chunks(kv):
    """[(K, V)] of [1, H, T, D] -> bytes of T/256 chunk payloads, each
    [layer][K/V][token][H*D] (the kvstash chunk layout)."""
    t = torch.stack([torch.stack([k[0], v[0]]) for k, v in kv])      # [L, 2, H, T, D]
    L, _, H, T, D = t.shape
    nc = T // CHUNK_TOKENS
    t = t[:, :, :, :nc * CHUNK_TOKENS].permute(0, 1, 3, 2, 4)          # [L, 2, T, H, D]
    t = t.reshape(L, 2, nc, CHUNK_TOKENS, H * D).permute(2, 0, 1, 3, 4).contiguous()
    return t


def raw_bytes(t):
    same = {1: torch.uint8, 2: torch.int16}[t.element_size()]
    return t.view(same).cpu().numpy().tobytes()


def write_dumps(model, seqs, name, dumpdir, device, fp16_model=None):
    """Writes NAME-bf16.kv, NAME-fp16.kv and NAME-fp8.kv; returns their facts."""
    files = {}
    facts = {}
    outs = {d: open(os.path.join(dumpdir, "%s-%s.kv" % (name, d)), "wb")
            for d in ("bf16", "fp16", "fp8")}
    stats = {d: dict(nonfinite=0, over_448=0, absmax=0.0, bytes=0) for d in outs}
    have_fp8 = hasattr(torch, "float8_e4m3fn")
    try:
        for ids in seqs:
            x = ids.to(device).long().unsqueeze(0)
            kb = to_chunks(kv_of(model, x))
            for st in stats.values():
                st["layers"], st["row_elems"] = kb.shape[1], kb.shape[-1]
            assert kb.dtype == torch.bfloat16, kb.dtype
            kf = to_chunks(kv_of(fp16_model, x)) if fp16_model is not None else kb.half()
            for d, t in (("bf16", kb), ("fp16", kf)):
                f = t.float()
                stats[d]["nonfinite"] += int((~torch.isfinite(f)).sum())
                stats[d]["absmax"] = max(stats[d]["absmax"], float(f.abs().max()))
                b = raw_bytes(t)
                outs[d].write(b)
                stats[d]["bytes"] += len(b)
            if have_fp8:
                stats["fp8"]["over_448"] += int((kb.float().abs() > 448).sum())
                b = raw_bytes(kb.to(torch.float8_e4m3fn))
                outs["fp8"].write(b)
                stats["fp8"]["bytes"] += len(b)
    finally:
        for f in outs.values():
            f.close()
    for d in outs:
        p = os.path.join(dumpdir, "%s-%s.kv" % (name, d))
        if stats[d]["bytes"] == 0:
            os.unlink(p)
            continue
        files[d] = p
        facts[d] = stats[d]
    facts["fp16"]["source"] = ("the model run in fp16" if fp16_model is not None
                               else "the bf16 KV cast to fp16")
    if "fp8" in facts:
        facts["fp8"]["source"] = "the bf16 KV cast to float8_e4m3fn, scale 1.0"
    return files, facts


# ---- ratios ---------------------------------------------------------------------
def tool_ratios(tool, path, dtype):
    if not tool:
        return {}
    try:
        p = subprocess.run([tool, "--dtype", dtype, "--frame", str(FRAME), path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"tool_error": str(e)}
    lines = [ln for ln in p.stdout.decode().splitlines() if ln.strip().startswith("{")]
    if p.returncode != 0 or not lines:
        return {"tool_error": "exit %d: %s" % (p.returncode, p.stderr.decode()[-300:])}
    return {"tool": json.loads(lines[-1])}


# ---- main -------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--debs", default=os.path.join(HERE, "..", ".deps", "text"))
    ap.add_argument("--work", default="/tmp/kvstash_trained")
    ap.add_argument("--out", default=None, help="table files (default WORK/codec_ratio)")
    ap.add_argument("--train-s", type=float, default=120.0)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--log-s", type=float, default=10.0)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--dump-seqs", type=int, default=8, help="held-out sequences of --seq tokens")
    ap.add_argument("--random-layers", type=int, default=4,
                    help="layers of the random 8B-shaped model (0: skip it)")
    ap.add_argument("--random-tokens", type=int, default=8192)
    ap.add_argument("--ratio-tool", default="", help="kvs_codec_ratio binary")
    ap.add_argument("--mini", action="store_true",
                    help="pure-torch model: smoke test without transformers ONLY")
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() and not a.cpu else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if not a.mini:
        try:
            import transformers
            log("torch", torch.__version__, "transformers", transformers.__version__, "device", device)
        except ImportError:
            raise SystemExit("transformers is required (--mini is for the CPU smoke test only)")
    out_dir = a.out or os.path.join(a.work, "codec_ratio")
    dumpdir = os.path.join(a.work, "dumps")
    os.makedirs(dumpdir, exist_ok=True)
    os.makedirs(out_dir, exist_ok=True)
    res = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device,
           "torch": torch.__version__, "frame_bytes": FRAME, "chunk_tokens": CHUNK_TOKENS}
    if device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)

    # corpus
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=a.work) as w:
        trb, vab, info = kv_corpus.build(a.debs, w)
    info.update(train_bytes=len(trb), val_bytes=len(vab), seconds=round(time.time() - t0, 1))
    res["corpus"] = info
    log("corpus:", json.dumps(info))
    tr = torch.frombuffer(bytearray(trb), dtype=torch.uint8)
    va = torch.frombuffer(bytearray(vab), dtype=torch.uint8)
    tr = tr.to(device)  # 24 MB: the batches are cut on the device
    uni = unigram_nats(trb, vab)
    log("unigram model of the training bytes, on the held-out bytes: %.4f nats/byte" % uni)

    # model and training
    conf = trained_config(a)
    torch.manual_seed(1234)
    if a.mini:
        model = MiniLlama(conf).to(device)
    else:
        model = hf_model(conf, device, torch.float32)
    nparam = sum(p.numel() for p in model.parameters())
    log("model: %s, %.1fM parameters" % (json.dumps(conf), nparam / 1e6))
    if device == "cuda":
        def amp():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib
        amp = contextlib.nullcontext
    before = eval_nats(model, va, a.seq, min(8, a.eval_windows), device, amp)
    tinfo = train(a, model, tr, va, device, amp)
    val = eval_nats(model, va, a.seq, a.eval_windows, device, amp)
    log("held-out loss: %.4f nats/byte (untrained %.4f, unigram %.4f; %.2f of unigram)"
        % (val, before, uni, val / uni))
    res["trained"] = dict(config=conf, parameters=nparam, implementation=(
        "MiniLlama (smoke test)" if a.mini else "transformers LlamaForCausalLM"),
        train=tinfo, val_nats_per_byte=val, untrained_nats_per_byte=before,
        unigram_nats_per_byte=uni, loss_over_unigram=val / uni,
        well_below_unigram=bool(val < 0.75 * uni))
    sd_path = os.path.join(a.work, "model.pt")
    torch.save({"config": conf, "state_dict": {k: v.detach().cpu() for k, v in
                                                model.state_dict().items()},
                "val_nats_per_byte": val, "mini": a.mini}, sd_path)
    with open(os.path.join(a.work, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)
    log("trained model saved: %s (state_dict + config; LlamaConfig(**config))" % sd_path)
    res["trained"]["state_dict"] = sd_path

    # dumps: held-out text
    nseq = min(a.dump_seqs, len(vab) // a.seq)
    seqs = [va[i * a.seq:(i + 1) * a.seq] for i in range(nseq)]
    model.eval()
    mb = recast(model, conf, device, torch.bfloat16, a.mini)
    mh = None
    if device == "cuda":  # (torch on the CPU may lack fp16 matmul: the smoke test casts)
        mh = recast(model, conf, device, torch.float16, a.mini)
    del model
    dumps = {}
    t0 = time.time()
    dumps["trained"] = write_dumps(mb, seqs, "trained", dumpdir, device, mh)
    log("trained dumps (%d x %d tokens) in %.1f s: %s" % (nseq, a.seq, time.time() - t0,
                                                          json.dumps(dumps["trained"][1])))
    del mb, mh
    if device == "cuda":
        torch.cuda.empty_cache()

    if a.random_layers > 0 and not a.mini:
        t0 = time.time()
        rc = llama_8b_config(a.random_layers)
        torch.manual_seed(1234)
        rb = hf_model(rc, device, torch.bfloat16).eval()
        rh = recast(rb, rc, device, torch.float16, False)  # the same weights, in fp16
        ids = torch.from_numpy(np.random.default_rng(a.random_tokens).integers(
            0, rc["vocab_size"], a.random_tokens))
        dumps["random8b"] = write_dumps(rb, [ids], "random8b", dumpdir, device, rh)
        log("random 8B-shaped dumps (%d layers, %d tokens) in %.1f s: %s" % (
            a.random_layers, a.random_tokens, time.time() - t0, json.dumps(dumps["random8b"][1])))
        res["random8b"] = dict(config=rc, note="bench/e2e_transformers.py's 8b model, first %d "
                               "layers, seed 1234, random token ids" % a.random_layers)
        del rb, rh
    elif a.random_layers > 0 and a.mini:
        # Smoke test: the same code path on a second random Mini model.
        torch.manual_seed(1234)
        rb = MiniLlama(conf).to(device=device, dtype=torch.bfloat16).eval()
        rh = None
        dumps["random8b"] = write_dumps(rb, [va[:a.seq]], "random8b", dumpdir, device, rh)
        res["random8b"] = dict(config=conf, note="smoke test: random MiniLlama")

    # ratios
    # Layer 0's V is a function of the token alone (and its K of the token and
    # position): with 256 byte tokens its rows repeat all the time, which a
    # match finder (zstd, lz4) exploits and an order-0 coder does not.  The
    # same dumps without layer 0 show the comparison without that effect.
    for mname in list(dumps):
        files, facts = dumps[mname]
        nf, nfa = {}, {}
        for d, p in files.items():
            elem = 1 if d == "fp8" else 2
            L, row = facts[d]["layers"], facts[d]["row_elems"]
            if L < 2:
                continue
            m = np.fromfile(p, np.uint8).reshape(-1, L, 2 * CHUNK_TOKENS * row * elem)
            q = p.replace(".kv", "-no-layer0.kv")
            m[:, 1:].tofile(q)
            nf[d] = q
            nfa[d] = dict(facts[d], layers=L - 1, bytes=int(m[:, 1:].size))
        if nf:
            dumps[mname + " (layers 1+)"] = (nf, nfa)

    rows = res["rows"] = []
    for mname, (files, facts) in dumps.items():
        for d, p in files.items():
            elem = 1 if d == "fp8" else 2
            t0 = time.time()
            r = dict(model=mname, dtype=d, file=p, **facts[d])
            r.update(py_ratios(p, elem, r["layers"], CHUNK_TOKENS * r["row_elems"] * elem))
            r.update(tool_ratios(a.ratio_tool, p, d))
            if "tool" not in r:  # the CLI tools stand in for the missing ratio tool
                with tempfile.TemporaryDirectory(dir=a.work) as w:
                    r.update(cli_ratios(p, w, elem))
            r["seconds"] = round(time.time() - t0, 1)
            log("ratio:", json.dumps(r))
            rows.append(r)
            save(res, out_dir)  # after each row: a run cut short keeps what it measured
    log(save(res, out_dir))
    log("written: %s/codec_ratios.json and .md" % out_dir)


def save(res, out_dir):
    with open(os.path.join(out_dir, "codec_ratios.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = table_md(res)
    with open(os.path.join(out_dir, "codec_ratios.md"), "w") as f:
        f.write(md)
    return md


def _f(x):
    return "-" if x is None else "%.3f" % x


def table_md(res):
    t = res.get("trained", {})
    lines = ["trained byte-level Llama (%s, %.1fM parameters, %s tokens in %s s): held-out "
             "%.3f nats/byte, unigram %.3f nats/byte (%.2f of unigram)" % (
                 t.get("implementation"), t.get("parameters", 0) / 1e6,
                 t.get("train", {}).get("tokens"), t.get("train", {}).get("seconds"),
                 t.get("val_nats_per_byte", float("nan")),
                 t.get("unigram_nats_per_byte", float("nan")),
                 t.get("loss_over_unigram", float("nan"))),
             "", "frames of %d bytes; ratios = logical bytes / stored bytes" % res["frame_bytes"],
             "",
             "| model | dtype | MiB | ours (tool) | entropy bound (tool) | zstd -1 transp. | "
             "lz4 transp. | zstd -1 plain | lz4 plain | ours (py est.) | bound (py) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        tl = r.get("tool", {})

        def g(k):
            return tl.get(k)
        lines.append("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["model"], r["dtype"], r["bytes"] / 2**20, _f(g("ratio")), _f(g("bound_ratio")),
            _f(g("zstd1_transposed_ratio") or r.get("cli_zstd1_transposed")),
            _f(g("lz4_transposed_ratio") or r.get("cli_lz4_transposed")),
            _f(g("zstd1_plain_ratio") or r.get("cli_zstd1_plain")),
            _f(g("lz4_plain_ratio") or r.get("cli_lz4_plain")),
            _f(r.get("py_ratio")), _f(r.get("py_entropy_bound"))))
    for r in res["rows"]:
        if "py_ratio_by_layer_K" in r:
            lines.append("")
            lines.append("%s %s, py estimate by layer: K %s; V %s" % (
                r["model"], r["dtype"], " ".join("%.2f" % x for x in r["py_ratio_by_layer_K"]),
                " ".join("%.2f" % x for x in r["py_ratio_by_layer_V"])))
    lines.append("")
    lines.append("zstd/lz4 columns: kvs_codec_ratio's figures (every frame compressed on its "
                 "own) when the tool ran, else the CLI tools' (zstd -1 on the whole file, lz4 -1 "
                 "in independent 64 KiB blocks).  py: bench/kv_ratio_est.py's estimate.")
    bad = [r["model"] + "/" + r["dtype"] for r in res["rows"]
           if r.get("tool", {}).get("decode_ok") is False or "tool_error" in r]
    if bad:
        lines.append("")
        lines.append("kvs_codec_ratio FAILED (decode mismatch or error) on: " + ", ".join(bad))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
