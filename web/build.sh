#!/usr/bin/env bash
# Builds the browser player's generated assets into web/dist/; the edge embeds them with web/src/
# (livesky.js, the driver; watch.html, the page) in sn-edge/src/web.rs:
#   livesky_peer_web_bg.wasm + livesky_peer_web.js  the peer core for wasm32 (wasm-bindgen glue)
#   mux.min.js                                      mux.js (npm), TS -> fMP4 for Media Source
# Needs: rustup target wasm32-unknown-unknown, wasm-bindgen-cli of the wasm-bindgen crate's
# version (Cargo.lock), npm. .ci/run calls it, so CI's edge embeds what this commit's code builds.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$root/Cargo.lock")
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "wasm-bindgen-cli $want is needed (have: ${have:-none}): cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# Small and fast in the page: size-optimised, whole-program, no debug info; a target dir of its
# own so the native build's profile is untouched.
# Paths are remapped so the bytes do not depend on where the checkout or the cargo home is.
RUSTFLAGS="--remap-path-prefix=$root=/livesky --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_LTO=true CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_PANIC=abort \
  cargo build --manifest-path "$root/Cargo.toml" -p livesky-peer-web --release \
    --target wasm32-unknown-unknown --target-dir "$root/target/wasm"
wasm-bindgen --target web --no-typescript --out-dir "$here/dist" \
  "$root/target/wasm/wasm32-unknown-unknown/release/livesky_peer_web.wasm"
(cd "$here" && npm install --no-audit --no-fund --silent)
cp "$here/node_modules/mux.js/dist/mux.min.js" "$here/dist/mux.min.js"
ls -l "$here/dist"
