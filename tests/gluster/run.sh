#!/usr/bin/env bash
# run.sh KVSTASH - kvstash on a real distributed filesystem (issue 5).
#
# Sets up a GlusterFS volume replicated over two bricks on this machine,
# mounts it twice through FUSE (mount A and mount B, standing for two
# hosts), and runs kvstash instances on both that share prompts: stores
# through A, retrieves with --verify through B.  Then it kills the first
# brick's process with SIGKILL while writers and readers keep running:
# nothing read may be wrong, reads must go on (the other replica serves
# them).  Then it kills the second brick as well: reads come back as
# counted misses, never wrong bytes or a hang.  With the bricks restarted,
# every chunk file verifies.  Tears everything down again,
# also on failure.  Exit 0 pass, 1 fail, 77 skip (with the reason).
#
# Needs root, /dev/fuse and the Debian packages glusterfs-server and
# glusterfs-client (make deps installs them).  Bounded: about a minute.
set -u
KVSTASH=${1:?usage: $0 path/to/kvstash}
KVSTASH=$(readlink -f "$KVSTASH")
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "not root: GlusterFS bricks and FUSE mounts need root"
[ -c /dev/fuse ] || skip "no /dev/fuse: the GlusterFS client mounts through FUSE"
for b in glusterd gluster glusterfs mount.glusterfs; do
    command -v $b >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin
    command -v $b >/dev/null 2>&1 ||
        skip "$b not found: install the Debian packages glusterfs-server and glusterfs-client (make deps)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvs-gluster-XXXXXX")
VOL=kvs$$
HOST=$(hostname)
STARTED_GLUSTERD=
FAILS=0
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }
ok() { echo "ok: $*"; }
g() { timeout 60 gluster --mode=script "$@"; }

teardown() {
    set +e
    [ -n "${LOOPS:-}" ] && kill $LOOPS 2>/dev/null && wait $LOOPS 2>/dev/null
    [ -n "${STEADY:-}" ] && kill -9 $STEADY 2>/dev/null
    for m in "$WORK/a" "$WORK/b"; do
        mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    if g volume info $VOL >/dev/null 2>&1; then
        g volume stop $VOL force >/dev/null 2>&1
        g volume delete $VOL >/dev/null 2>&1
    fi
    # Brick processes of this volume that outlived the stop.
    pkill -KILL -f "glusterfsd.*--volfile-id $VOL\." 2>/dev/null
    if [ -n "$STARTED_GLUSTERD" ]; then
        kill "$STARTED_GLUSTERD" 2>/dev/null
        pkill -KILL -f "glustershd" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap teardown EXIT

# glusterd: reuse a running one, else start our own.
if ! pgrep -x glusterd >/dev/null; then
    glusterd -p "$WORK/glusterd.pid" || skip "glusterd does not start here"
    for i in $(seq 50); do [ -s "$WORK/glusterd.pid" ] && g volume list >/dev/null 2>&1 && break; sleep 0.2; done
    STARTED_GLUSTERD=$(cat "$WORK/glusterd.pid" 2>/dev/null)
fi
g volume list >/dev/null 2>&1 || skip "glusterd does not answer"

mkdir -p "$WORK/brick1" "$WORK/brick2" "$WORK/a" "$WORK/b"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
g volume create $VOL replica 2 "$HOST:$WORK/brick1" "$HOST:$WORK/brick2" force >/dev/null ||
    { fail "volume create"; exit 1; }
# Notice a dead brick in seconds, not the 42 s default.
g volume set $VOL network.ping-timeout 5 >/dev/null
g volume start $VOL >/dev/null || { fail "volume start"; exit 1; }
mount -t glusterfs "$HOST:/$VOL" "$WORK/a" && mount -t glusterfs "$HOST:/$VOL" "$WORK/b" ||
    { fail "mounting the volume"; exit 1; }
echo "volume $VOL: replica 2 over $WORK/brick1 and $WORK/brick2, mounted at $WORK/a and $WORK/b" \
     "in $(( $(ms) - t0 )) ms"

# Small geometry: 2 layers x 2 x 8 heads x 64 x bf16 = 4 KiB a token, 1 MiB chunks.
GEO="--layers 2 --kv-heads 8 --head-dim 64 --model gluster/model"
export LMCACHE_LOCAL_CPU=false KVSTASH_IO_TIMEOUT_MS=5000 KVSTASH_LOG_LEVEL=error
A() { LMCACHE_WEKA_PATH="$WORK/a" "$KVSTASH" "$@"; }
B() { LMCACHE_WEKA_PATH="$WORK/b" "$KVSTASH" "$@"; }

# 1. Both bricks up: what A stores, B finds, byte for byte.
A store --seed 1,2,3,4 --tokens 2048 --shared-prefix 9:1024 $GEO --quiet >"$WORK/out" 2>&1 ||
    fail "store through A: $(cat "$WORK/out")"
B retrieve --seed 1,2,3,4 --tokens 2048 --shared-prefix 9:1024 $GEO --verify --quiet >"$WORK/out" 2>&1
grep -q "verify: ok" "$WORK/out" && grep -q "hit 8192 tokens" "$WORK/out" &&
    ok "4 prompts stored through A, all 8192 tokens read back and verified through B" ||
    fail "B did not read back what A stored: $(cat "$WORK/out")"

# 2. Writers on A and readers on B, in loops; one brick killed meanwhile.
writer() {  # new prompts through A, one process each
    local s=100
    while :; do
        A store --seed $s --tokens 2048 --shared-prefix 9:1024 $GEO >>"$WORK/w.out" 2>>"$WORK/w.err"
        echo "exit $?" >>"$WORK/w.out"
        s=$((s + 1))
    done
}
reader() {  # old and recent prompts through B, every byte checked
    local i=0
    while :; do
        local s=$(( i % 2 ? (i % 4) + 1 : 100 + (i / 2) % 40 ))
        B retrieve --seed $s --tokens 2048 --shared-prefix 9:1024 $GEO --verify >>"$WORK/r$1.out" 2>>"$WORK/r$1.err"
        echo "exit $? phase $(cat "$WORK/phase")" >>"$WORK/r$1.out"
        i=$((i + 1))
    done
}
echo before >"$WORK/phase"
writer & LOOPS="$!"
reader 1 & LOOPS="$LOOPS $!"
reader 2 & LOOPS="$LOOPS $!"
sleep 6
pid=$(g volume status $VOL "$HOST:$WORK/brick1" --xml 2>/dev/null | sed -n 's:.*<pid>\([0-9]*\)</pid>.*:\1:p' | head -1)
[ -n "$pid" ] && kill -9 "$pid" && echo after >"$WORK/phase" &&
    echo "killed the first brick (glusterfsd pid $pid) with SIGKILL" || fail "no brick pid to kill"
sleep 14
# A store process that opens the store while a replica is up and goes on
# storing a prompt every half second after the last brick is gone: the
# failures it meets are counted by reason and printed when it ends.  The
# short-lived loops above count only if one of them happens to be past its
# engine open at the moment of the kill, which some runs never caught.
A store --seed $(seq -s, 500 511) --tokens 2048 $GEO --interval 0.5 --keep-going \
    >"$WORK/l.out" 2>"$WORK/l.err" &
STEADY=$!
sleep 1
# Then the second brick too: nothing can serve; reads must come back as
# counted misses (or an instance that cannot open says so), never as wrong
# bytes or a hang.
pid2=$(g volume status $VOL "$HOST:$WORK/brick2" --xml 2>/dev/null | sed -n 's:.*<pid>\([0-9]*\)</pid>.*:\1:p' | head -1)
[ -n "$pid2" ] && kill -9 "$pid2" && echo down >"$WORK/phase" &&
    echo "killed the second brick (glusterfsd pid $pid2) with SIGKILL: no replica left" ||
    fail "no second brick pid to kill"
sleep 8
kill $LOOPS 2>/dev/null; wait $LOOPS 2>/dev/null; LOOPS=
# the steady store's last prompts fail at once (no brick answers): it ends
# within seconds; a store that hangs is a failure of its own
for i in $(seq 100); do kill -0 $STEADY 2>/dev/null || break; sleep 0.2; done
if kill -0 $STEADY 2>/dev/null; then
    kill -9 $STEADY; fail "a store with no brick left still ran 20 s after its last prompt was due"
fi
wait $STEADY 2>/dev/null

# 3. What happened.  Each CLI run prints its exit status; retrieves print a
# verify line and their stats (a JSON object) on standard error.
summary=$(/usr/bin/python3 - "$WORK" <<'PY'
import glob, json, re, sys
w = sys.argv[1]
runs = {"before": [0, 0, 0], "after": [0, 0, 0], "down": [0, 0, 0]}  # runs, hit tokens, verify failures
bad_exit = {"before": 0, "after": 0, "down": 0}   # exits other than 0 (ok) and 1 (verify failed)
for f in glob.glob(w + "/r*.out"):
    phase_hits = 0
    for line in open(f, errors="replace"):
        m = re.search(r"hit (\d+) tokens", line)
        if m: phase_hits = int(m.group(1))
        if "verify: FAILED" in line: runs["x"] = 1
        m = re.match(r"exit (\d+) phase (\w+)", line)
        if m:
            code, ph = int(m.group(1)), m.group(2)
            runs[ph][0] += 1; runs[ph][1] += phase_hits; phase_hits = 0
            if code == 1: runs[ph][2] += 1
            elif code != 0: bad_exit[ph] += 1
misses = {}
for f in glob.glob(w + "/r*.err") + glob.glob(w + "/w.err") + glob.glob(w + "/l.err"):
    for line in open(f, errors="replace"):
        if line.startswith("stats: "):
            try: s = json.loads(line[7:])
            except ValueError: continue
            for k, v in s.items():
                if (k.startswith("miss_") or k.startswith("store_failed") or k == "store_dropped"
                        or k == "store_unhealthy") and v:
                    misses[k] = misses.get(k, 0) + v
stores = open(w + "/w.out", errors="replace").read()
st_ok = len(re.findall(r"exit 0", stores)); st_fail = len(re.findall(r"exit [1-9]", stores))
print(json.dumps({"reads_before": runs["before"], "reads_after": runs["after"],
                  "reads_down": runs["down"], "bad_exit": bad_exit,
                  "wrong": runs.get("x", 0), "stores_ok": st_ok, "stores_failed": st_fail,
                  "counted": misses}))
PY
)
echo "results: $summary"
val() { echo "$summary" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
[ "$(val 'd["wrong"] + d["reads_before"][2] + d["reads_after"][2] + d["reads_down"][2]')" = 0 ] &&
    ok "no retrieve through B served a wrong byte: before, after one brick died, with none left" ||
    fail "a retrieve served wrong bytes"
[ "$(val 'd["bad_exit"]["before"] + d["bad_exit"]["after"]')" = 0 ] &&
    ok "no retrieve ended in an error while a replica was up" ||
    fail "retrieves ended in errors: $(tail -3 "$WORK"/r*.err)"
echo "with no replica left: of $(val 'd["reads_down"][0]') retrieves," \
     "$(val 'd["reads_down"][0] - d["bad_exit"]["down"]') ran to the end with misses and" \
     "$(val 'd["bad_exit"]["down"]') could not open the store (exit 3, an I/O error, named)"
[ "$(val 'd["reads_after"][0] > 5 and d["reads_after"][1] > 0')" = True ] &&
    ok "service went on after the kill: $(val 'd["reads_after"][0]') retrieves, $(val 'd["reads_after"][1]') tokens hit" ||
    fail "no hits after the brick was killed"
[ "$(val 'sum(v for k, v in d["counted"].items() if k != "miss_absent") > 0')" = True ] &&
    ok "misses and failed stores counted by reason: $(val 'd["counted"]')" ||
    fail "nothing counted although the volume lost its bricks: $(val 'd["counted"]')"
# Bring the bricks back; every chunk file, read through B, verifies.
g volume start $VOL force >/dev/null
for i in $(seq 50); do B ls >/dev/null 2>&1 && break; sleep 0.2; done
if B verify >"$WORK/verify.out" 2>&1; then ok "$(grep '^verify:' "$WORK/verify.out")"
else fail "kvstash verify through B: $(cat "$WORK/verify.out")"; fi
echo "total time $(( ($(ms) - t0) / 1000 )) s"
if [ "$FAILS" -gt 0 ]; then echo "$FAILS failures"; exit 1; fi
echo "all passed"; exit 0
