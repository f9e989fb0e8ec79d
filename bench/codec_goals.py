#!/usr/bin/env python3
"""codec_goals.py - issue 13's goals, read from what one device call of
bench/gpu_session.sh measured, each beside the ceiling of the same call.

    codec_goals.py --gpu DIR --e2e DIR --ratios DIR [--out goals.md]

DIR are the session's output folders: --gpu holds bench/gpu_bench.sh's
codec.json (test_gpu_codec bench), bench_codec.log (kvstash bench --data
bf16) and paths.log (bench/read_paths.c); --e2e holds
bench/e2e_gpu.sh's llama8b-b.json; --ratios holds bench/codec_ratios.sh's
codec_ratios.json.  A missing input is reported as missing, never guessed.
Prints the table and writes it as Markdown to --out.  Exit status 0 when
every input was found and every goal met, 1 otherwise (the table is
written either way).
"""

import argparse
import json
import os
import re
import statistics
import sys

PREFIX = 32768            # the goal's 32k-token hit, the 4 GiB 8B-shaped prefix
DTYPES = ("bf16", "fp16", "fp8")


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


class Table:
    """Rows of goals (measured value against a target, met or not) and of
    facts (reported, not judged)."""

    def __init__(self):
        self.rows = []
        self.missing = []
        self.missed = []

    def goal(self, name, met, measured, ceiling="", ratio="", target="", note=""):
        """met: True/False, or None when the call left no input for it."""
        if met is None:
            self.missing.append(name)
        elif not met:
            self.missed.append(name)
        verdict = "NO INPUT" if met is None else "met" if met else "NOT met"
        self.rows.append((name, measured, ceiling, ratio, target, verdict, note))

    def fact(self, name, measured, note=""):
        self.rows.append((name, measured, "", "", "", "", note))

    def markdown(self):
        head = ("| goal | measured | ceiling, same call | ratio | target | | note |\n"
                "|---|---:|---:|---:|---|---|---|\n")
        return head + "".join("| %s |\n" % " | ".join(str(c) for c in r) for r in self.rows)


def kernel_goals(t, codec):
    for dt in DTYPES:
        d = (codec or {}).get(dt)
        if not d:
            t.goal("GPU decode + verify, %s" % dt, None, "missing", target=">= 300 GB/s")
            t.goal("GPU encode, %s" % dt, None, "missing", target=">= 100 GB/s")
            continue
        ceil = "%.0f GB/s (D2D copy)" % d["memcpy_d2d_gbs"]
        t.goal("GPU decode + verify, %s" % dt, d["decode_verify_gbs"] >= 300,
               "%.1f GB/s" % d["decode_verify_gbs"], ceil,
               "%.2f" % (d["decode_verify_gbs"] / d["memcpy_d2d_gbs"]), ">= 300 GB/s",
               "what a retrieve runs; decode alone %.1f GB/s" % d["decode_gbs"])
        t.goal("GPU encode, %s" % dt, d["encode_gbs"] >= 100, "%.1f GB/s" % d["encode_gbs"],
               ceil, "%.2f" % (d["encode_gbs"] / d["memcpy_d2d_gbs"]), ">= 100 GB/s",
               "synthetic KV, %.3fx" % d["ratio"])


def tool_figures(r):
    tool = r.get("tool") or {}
    return (tool.get("ratio", r.get("py_ratio", 0.0)),
            "entropy bound %.3fx, zstd -1 %.3fx, lz4 %.3fx (after the same transposition)"
            % (tool.get("bound_ratio", r.get("py_entropy_bound", 0.0)),
               tool.get("zstd1_transposed_ratio", 0.0), tool.get("lz4_transposed_ratio", 0.0)))


def ratio_goals(t, ratios):
    rows = {(r["model"], r["dtype"]): r for r in (ratios or {}).get("rows", [])}
    name = "ratio, bf16 KV of the trained model"
    r = rows.get(("trained", "bf16"))
    if r is None:
        t.goal(name, None, "missing", target=">= 1.4x")
    else:
        tr = ratios.get("trained", {})
        ratio, others = tool_figures(r)
        t.goal(name, ratio >= 1.4, "%.3fx" % ratio, target=">= 1.4x",
               note="%s; the model: %.3f nats/byte held out vs %.3f for a unigram model, "
               "%.0f s of training" % (others, tr.get("val_nats_per_byte", float("nan")),
                                       tr.get("unigram_nats_per_byte", float("nan")),
                                       tr.get("train", {}).get("seconds", float("nan"))))
    for (model, dt), r in sorted(rows.items()):
        if (model, dt) != ("trained", "bf16") and model in ("trained", "random8b"):
            ratio, others = tool_figures(r)
            t.fact("ratio, %s %s (item 2)" % (model, dt), "%.3fx" % ratio, others)


def best_path(paths_log, fs, mode="pread registered+H2D"):
    """The best thread count of one read_paths row on one filesystem type."""
    best, section = None, None
    for line in (paths_log or "").splitlines():
        m = re.match(r"-- \S+ \((\w+)\)", line)
        if m:
            section = m.group(1)
        elif section == fs and line.startswith(mode + " "):
            vals = [float(v) for v in re.findall(r"([\d.]+) GB/s", line)]
            best = max(vals) if vals else best
    return best


def e2e_goals(t, b, paths_log):
    run = next((r for r in (b or {}).get("runs", []) if r.get("prefix") == PREFIX), None)
    names = ("retrieve, 4 GiB prefix from the page cache (KV bytes)",
             "time to first token, 32k-token hit vs its prefill",
             "same answers: restored KV bit-identical, greedy unchanged")
    if run is None:
        for n, target in zip(names, (">= 0.90 of H2D", ">= 15x", "all true")):
            t.goal(n, None, "missing", target=target)
        return
    ceiling, kv = run["h2d_ceiling_gbs"], run["kv_bytes"]
    parts = run.get("transformers_hit_parts_s", {}).get("retrieve") or []
    host = best_path(paths_log, "ext4")
    ratio_read = run.get("codec_ratio_read") or 1.0
    why = ("raw read path of the same call (bench/read_paths.c: pread into registered "
           "memory in 1 MiB units + copy to the GPU, ext4 page cache, no kvstash code): %.1f "
           "GB/s of stored bytes = %.1f GB/s of KV at %.3fx"
           % (host, host * ratio_read, ratio_read) if host else "raw read path not measured")
    if not parts:
        t.goal(names[0], None, "missing", target=">= 0.90 of H2D")
    else:
        gbs = kv / statistics.median(parts) / 1e9
        t.goal(names[0], gbs / ceiling >= 0.90, "%.1f GB/s" % gbs,
               "%.1f GB/s (pinned H2D)" % ceiling, "%.2f" % (gbs / ceiling), ">= 0.90", why)
    if run.get("plain_restore_gbs"):
        t.fact("layer by layer into the paged cache: codec / plain files",
               "%.1f / %.1f GB/s" % (run["restore_gbs"], run["plain_restore_gbs"]),
               "KV in place when the last layer is; plain: the same KV stored with codec off")
    t.goal(names[1], run["speedup"] >= 15, "%.1fx" % run["speedup"],
           "%.1fx (copy ceiling)" % run["ceiling_speedup"],
           "%.2f" % (run["speedup"] / run["ceiling_speedup"]), ">= 15x",
           "hit %.1f ms, prefill %.3f s; plain files %.1fx"
           % (run["ttft_hit_median_s"] * 1e3, run["ttft_full_median_s"],
              run.get("plain_speedup", float("nan"))))
    same = all(bool(run.get(k)) for k in ("restored_kv_bit_identical",
                                          "greedy_hit_equals_computed", "pass"))
    t.goal(names[2], same, "yes" if same else "NO", target="all true",
           note="KV bit-identical %s; 32 greedy tokens equal the computed path's %s; run %s"
           % (run.get("restored_kv_bit_identical"), run.get("greedy_hit_equals_computed"),
              "PASS" if run.get("pass") else "FAIL"))


def store_goal(t, bench_log, paths_log):
    name = "store, codec on vs off (files in /dev/shm)"
    m = re.search(r"store with codec on no slower than off: ([\d.]+) vs ([\d.]+) GB/s",
                  bench_log or "")
    if not m:
        t.goal(name, None, "missing", target=">= 1.0x")
        return
    on, off = float(m.group(1)), float(m.group(2))
    t.goal(name, on >= off, "%.2fx" % (on / off), target=">= 1.0x",
           note="%.2f vs %.2f GB/s of KV, kvstash bench --data bf16 (synthetic KV)" % (on, off))
    m = re.search(r"retrieve with codec on >= 0.90 of host-to-device, in logical KV bytes: "
                  r"([\d.]+) GB/s / ([\d.]+) = ([\d.]+)", bench_log)
    if m:
        shm = best_path(paths_log, "tmpfs")
        on_ratio = re.search(r"codec on:.*logical/stored bytes written ([\d.]+)", bench_log)
        note = "raw read path from tmpfs not measured"
        if shm and on_ratio:
            note = ("raw read path of the same call from tmpfs (bench/read_paths.c, 1 MiB "
                    "units, no kvstash code): %.1f GB/s of stored bytes = %.1f GB/s of KV at "
                    "the bench's %sx"
                    % (shm, shm * float(on_ratio.group(1)), on_ratio.group(1)))
        t.fact("retrieve, codec on, files in /dev/shm (same bench, synthetic KV)",
               "%s GB/s, %s of H2D" % (m.group(1), m.group(3)), note)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", required=True)
    ap.add_argument("--e2e", required=True)
    ap.add_argument("--ratios", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    paths_log = read_text(os.path.join(a.gpu, "paths.log"))
    t = Table()
    ratio_goals(t, load_json(os.path.join(a.ratios, "codec_ratios.json")))
    kernel_goals(t, load_json(os.path.join(a.gpu, "codec.json")))
    e2e_goals(t, load_json(os.path.join(a.e2e, "llama8b-b.json")), paths_log)
    store_goal(t, read_text(os.path.join(a.gpu, "bench_codec.log")), paths_log)
    text = t.markdown()
    verdict = ("every goal met" if not t.missing and not t.missed else
               "missed: %s; no input: %s" % (", ".join(t.missed) or "none",
                                              ", ".join(t.missing) or "none"))
    text += "\n%s\n" % verdict
    print(text, end="")
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Issue 13's goals, one device call\n\n" + text)
    return 0 if not t.missing and not t.missed else 1


if __name__ == "__main__":
    sys.exit(main())
