#!/usr/bin/env bash
# client_install.sh — installs the build into a scratch prefix and builds an app against
# libringbeat-client three ways: pkg-config (shared and static) and CMake find_package.
# Usage: client_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cat >"$tmp/app.c" <<'C'
#include <errno.h>
#include <stdio.h>
#include <ringbeat_client.h>
int main(void)
{
    struct rbc_config cfg = {.url = "ws://example.com:80"};
    struct rbc *c;
    if (rbc_create(&cfg, &c) != -EPROTONOSUPPORT)
        return 1; /* ws:// is reserved for the WebSocket transport */
    cfg.url = "127.0.0.1:7600";
    if (rbc_create(&cfg, &c) != 0 || rbc_fd(c) < 0)
        return 1;
    rbc_destroy(c);
    printf("ok %s\n", RBC_VERSION_STRING);
    return 0;
}
C
libdir=$(find "$tmp/prefix" -name ringbeat-client.pc -printf '%h\n' | head -1)
export PKG_CONFIG_PATH=$libdir
pc() { pkg-config --define-prefix "$@" ringbeat-client; } # the .pc was written for the real prefix
cc "$tmp/app.c" -o "$tmp/app-shared" $(pc --cflags --libs)
LD_LIBRARY_PATH=$libdir/.. "$tmp/app-shared"
cc "$tmp/app.c" -o "$tmp/app-static" $(pc --cflags) "$libdir/../libringbeat-client.a" \
  $(pc --static --libs-only-other)
"$tmp/app-static"
mkdir "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(ringbeat-client REQUIRED)
add_executable(app ../app.c)
target_link_libraries(app PRIVATE ringbeat::ringbeat_client)
CM
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm/build" >/dev/null
"$tmp/cm/build/app"
# Only the public API leaves the shared library.
if nm -D --defined-only "$libdir/../libringbeat-client.so" | awk '{print $3}' | grep -v '^rbc_'; then
  echo "internal symbols exported"
  exit 1
fi
echo "install: pkg-config (shared, static) and find_package all link"
