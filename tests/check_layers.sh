#!/bin/sh
# check_layers.sh - every #include "..." in src/ and tools/ against the layer
# table of docs/architecture.md (its ```layers, ```allow and ```deny blocks).
# Fails, naming the file, the line and the rule, when an include runs up a
# layer, takes a forbidden edge, or a src/ file is missing from the table;
# or when tools/ includes anything but kvstash.h and its own headers.
# Usage: check_layers.sh [source dir]   (default: the checkout above this file)
set -u
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
doc=$root/docs/architecture.md
[ -r "$doc" ] || { echo "check_layers: cannot read $doc" >&2; exit 1; }

{
    # the table first, then "src <file>" / "tools <file>" lines with their includes
    awk '/^```(layers|allow|deny)$/ {blk = substr($0, 4); next}
         /^```/ {blk = ""; next}
         blk != "" && !/^#/ && NF {print blk, $0}' "$doc"
    for f in "$root"/src/*.c "$root"/src/*.h "$root"/src/*.c.in "$root"/tools/*.c "$root"/tools/*.h; do
        [ -e "$f" ] || continue
        case $f in "$root"/tools/*) kind=tools ;; *) kind=src ;; esac
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" |
            sed 's/^\([0-9]*\):.*"\([^"]*\)".*/\1 \2/' |
            while read -r line hdr; do echo "inc $kind ${f##*/} $line $hdr"; done
        echo "file $kind ${f##*/}"
    done
} | awk '
$1 == "layers" {
    if ($2 !~ /^[0-9]+$/) { print "check_layers: bad layers row: " $0; bad = 1; next }
    for (i = 4; i <= NF; i++) {
        if ($i ~ /^[a-z0-9_]+\.(c|h|c\.in)$/) {
            if ($i in mod) { print "check_layers: " $i " is in two modules"; bad = 1 }
            mod[$i] = $3
        } else break
    }
    layer[$3] = $2 + 0
    next
}
$1 == "allow" { allow[$2 " " $3] = 1; next }
$1 == "deny"  { deny[$2 " " $3] = 1; next }
$1 == "file" && $2 == "src" && !($3 in mod) {
    print "src/" $3 ": not in the layer table of docs/architecture.md (add it to a module)"; bad = 1; next
}
$1 == "inc" && $2 == "tools" {
    if ($5 != "kvstash.h" && $5 !~ /^cli[a-z_]*\.h$/) {
        print "tools/" $3 ":" $4 ": includes " $5 "; the CLI uses the public API only (kvstash.h)"; bad = 1
    }
    next
}
$1 == "inc" && $2 == "src" {
    f = $3; h = $5; n++
    if (!(f in mod)) next  # reported by its "file" line
    if (!(h in mod)) { print "src/" f ":" $4 ": includes " h ", which is in no module of the table"; bad = 1; next }
    a = mod[f]; b = mod[h]
    if (a == b) next
    if ((a " " b) in deny) {
        print "src/" f ":" $4 ": includes " h ": module " a " must not depend on " b " (docs/architecture.md, forbidden edges)"; bad = 1; next
    }
    if (layer[b] < layer[a]) next
    if ((f " " h) in allow) next
    print "src/" f ":" $4 ": includes " h " (" b ", layer " layer[b] ") from " a " (layer " layer[a] "): an include runs down the layers only (docs/architecture.md)"
    bad = 1
}
END {
    if (n == 0) { print "check_layers: no include found; wrong source dir?"; exit 1 }
    if (bad) exit 1
    print "check_layers: " n " includes of src/ follow the layer table"
}'
