#!/usr/bin/env bash
# Rebuilds the small MNIST subsets shipped in data/mnist/ from the full MNIST set.
#
# Usage: scripts/make-bundled-mnist.sh [SRC]
#
#   SRC defaults to <repo>/.cache/mnist; fill it first with `scripts/fetch-data.sh mnist`.
#
# Writes (deterministic gzip: no name, no timestamp, level 9):
#   data/mnist/train-10k-images-idx3-ubyte.gz  the FIRST 10,000 images of the MNIST TRAINING set
#   data/mnist/train-10k-labels-idx1-ubyte.gz  their labels
#   data/mnist/test-1k-images-idx3-ubyte.gz    the first 1,000 images of the MNIST TEST set
#   data/mnist/test-1k-labels-idx1-ubyte.gz    their labels
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${1:-$repo_root/.cache/mnist}"
out="$repo_root/data/mnist"

for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [[ ! -f "$src/$f" ]]; then
        echo "error: $src/$f not found; run scripts/fetch-data.sh mnist first" >&2
        exit 1
    fi
done

# Prints the big-endian u32 at byte offset $2 of file $1, in decimal.
read_u32() {
    od -An -tu1 -j "$2" -N 4 "$1" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }'
}

# Writes the big-endian bytes of the u32 $1 to stdout.
write_u32() {
    local v="$1"
    printf "\\$(printf '%03o' $(((v >> 24) & 255)))"
    printf "\\$(printf '%03o' $(((v >> 16) & 255)))"
    printf "\\$(printf '%03o' $(((v >> 8) & 255)))"
    printf "\\$(printf '%03o' $((v & 255)))"
}

# subset KIND SRC_FILE COUNT DEST_FILE: keeps the first COUNT items of an IDX file.
subset() {
    local kind="$1" in="$2" count="$3" dest="$4"
    local magic n header item
    magic="$(read_u32 "$in" 0)"
    n="$(read_u32 "$in" 4)"
    if [[ "$kind" == images ]]; then
        if [[ "$magic" != 2051 ]]; then
            echo "error: $in: magic number $magic, expected 2051 (0x00000803, images)" >&2
            exit 1
        fi
        local rows cols
        rows="$(read_u32 "$in" 8)"
        cols="$(read_u32 "$in" 12)"
        header=16
        item=$((rows * cols))
    else
        if [[ "$magic" != 2049 ]]; then
            echo "error: $in: magic number $magic, expected 2049 (0x00000801, labels)" >&2
            exit 1
        fi
        header=8
        item=1
    fi
    if ((count > n)); then
        echo "error: $in holds $n items, fewer than the $count requested" >&2
        exit 1
    fi
    local tmp="$dest.partial"
    {
        write_u32 "$magic"
        write_u32 "$count"
        if [[ "$kind" == images ]]; then
            write_u32 "$rows"
            write_u32 "$cols"
        fi
        head -c $((header + count * item)) "$in" | tail -c +$((header + 1))
    } | gzip -n -9 >"$tmp"
    mv -f "$tmp" "$dest"
    echo "  wrote $dest (first $count of $n $kind from $(basename "$in"))"
}

mkdir -p "$out"
echo "Building the bundled MNIST subsets from $src into $out ..."
subset images "$src/train-images-idx3-ubyte" 10000 "$out/train-10k-images-idx3-ubyte.gz"
subset labels "$src/train-labels-idx1-ubyte" 10000 "$out/train-10k-labels-idx1-ubyte.gz"
subset images "$src/t10k-images-idx3-ubyte" 1000 "$out/test-1k-images-idx3-ubyte.gz"
subset labels "$src/t10k-labels-idx1-ubyte" 1000 "$out/test-1k-labels-idx1-ubyte.gz"
echo "Done."
