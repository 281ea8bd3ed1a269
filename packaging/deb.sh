#!/usr/bin/env bash
# packaging/deb.sh ARCH: cross-builds target/debian/edgelive_<version>_<ARCH>.deb for a
# Raspberry-Pi-class board with Debian's own Rust (rustup on the build machine may not be able
# to download other targets' standard libraries). ARCH: arm64 (Pi 3/4/5 with a 64-bit OS) or
# armhf (ARMv7: Pi 2/3 with a 32-bit OS; Pi Zero/1 are ARMv6, which Debian's armhf is not).
# For the build machine's own architecture use `cargo deb -p edgelive`.
#
# On Debian 12, as root (or with sudo), it installs what it needs once: the foreign
# architecture, rustc-web/cargo-web and that architecture's libstd-rust-web-dev (the compiler
# and standard library must be the same version, so both come from Debian), the cross gcc
# used as linker and C compiler (ring, under rustls for mqtts://, compiles C and assembly),
# and cargo-deb (from crates.io) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:-}"
case "$arch" in
arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu ;;
armhf) triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf ;;
*)
  echo "usage: packaging/deb.sh arm64|armhf" >&2
  exit 64
  ;;
esac

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# --- What the cross build needs, installed when missing. ---
need=()
dpkg --print-foreign-architectures | grep -qx "$arch" || "${sudo[@]}" dpkg --add-architecture "$arch"
command -v /usr/bin/rustc >/dev/null || need+=(rustc-web)
command -v /usr/bin/cargo >/dev/null || need+=(cargo-web)
dpkg -s "libstd-rust-web-dev:$arch" >/dev/null 2>&1 || need+=("libstd-rust-web-dev:$arch")
command -v "$gnu-gcc" >/dev/null || need+=("gcc-$gnu")
dpkg -s "libc6-dev-$arch-cross" >/dev/null 2>&1 || need+=("libc6-dev-$arch-cross")
# dpkg-shlibdeps reads the target's libc to write Depends.
dpkg -s "libc6:$arch" >/dev/null 2>&1 || need+=("libc6:$arch")
if [ ${#need[@]} -gt 0 ]; then
  echo "deb.sh: installing ${need[*]}" >&2
  # A foreign architecture's index can fail to download while a mirror syncs; what is needed
  # may still be installable from the indexes that did arrive.
  "${sudo[@]}" apt-get update -qq || echo "deb.sh: apt-get update reported errors; trying the install anyway" >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian compiler and standard library must be one version, or rustc refuses the library.
compiler=$(/usr/bin/rustc --version | awk '{print $2}')
library=$(dpkg-query -W -f '${Version}' "libstd-rust-web-dev:$arch" | sed 's/+.*//')
if [ "$compiler" != "$library" ]; then
  echo "deb.sh: /usr/bin/rustc is $compiler but libstd-rust-web-dev:$arch is $library; upgrade both: apt-get install rustc-web libstd-rust-web-dev:$arch" >&2
  exit 1
fi
if ! command -v cargo-deb >/dev/null; then
  echo "deb.sh: cargo install cargo-deb" >&2
  cargo install --locked cargo-deb
fi

# --- The build: Debian's rustc for every crate, the cross gcc as linker. ---
linker_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_LINKER"
export RUSTC=/usr/bin/rustc
export "$linker_var=$gnu-gcc"
cargo build --release --locked -p edgelive --target "$triple"
cargo deb -p edgelive --target "$triple" --no-build --no-strip --output target/debian/
ls target/debian/edgelive_*_"$arch".deb
