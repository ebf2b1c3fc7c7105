#!/usr/bin/env bash
# peer_bench.py with llama.cpp on a machine with no network (the device tool's machine, whose CPU
# is an Intel Xeon with AMX): `pack` here puts llama.cpp's source (less its models, docs and media:
# 9 MB) and the GPT-2 vocabulary in .devdata/ (list it in .git/info/exclude, carry it); `run` there
# builds llama.cpp (about 90 s on 16 cores) and runs peer_bench.py with the options given.
#   bash benchmarks/offline_peer.sh pack
#   bash benchmarks/offline_peer.sh run --repeats 3 --only decode,prefill
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
    tree=$(cd benchmarks && python3 -c 'import llama_cpp_peer as p; print(p.source().relative_to(p.BUILD))')
    mkdir -p .devdata/gpt2
    tar -C build/llama.cpp -c --exclude="$tree/models" --exclude="$tree/docs" --exclude="$tree/media" "$tree" \
        | xz -T0 -6 > .devdata/llama.tar.xz
    cp ../shared/data/gpt2/vocab.json ../shared/data/gpt2/merges.txt .devdata/gpt2/ ;;
run)
    shift
    mkdir -p build/llama.cpp
    tar -xJf .devdata/llama.tar.xz -C build/llama.cpp
    python3 benchmarks/llama_cpp_peer.py build > "${OUT:-.}/llama-build.log" 2>&1 \
        || { tail -20 "${OUT:-.}/llama-build.log"; exit 1; }
    PYTHONUNBUFFERED=1 python3 benchmarks/peer_bench.py --vocab .devdata/gpt2 "$@" ;;
*)
    echo "usage: $0 pack | run [peer_bench.py options]" >&2
    exit 2 ;;
esac
