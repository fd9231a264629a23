#!/usr/bin/env bash
# Builds static civetweb and prometheus-cpp from Debian bookworm's own source
# packages, because Debian ships both only as shared libraries and the ferry
# release binary is linked fully statically.
#
#   scripts/build-static-deps.sh
#   cmake -DCMAKE_PREFIX_PATH="$PWD/.deps" ...   # then find_package(prometheus-cpp)
#
# Environment:
#   FERRY_DEPS_PREFIX  install prefix (default: <project root>/.deps)
#   FERRY_DEPS_CACHE   sources, build trees and build.log
#                      (default: $FERRY_DEPS_PREFIX/.build)
#
# Runs as root on a bare Debian bookworm: it adds deb-src entries and installs
# its build tools with apt-get. A second run with the same source versions
# finds the stamp file and returns at once.
set -euo pipefail
set -o errtrace  # The ERR trap below reports failures inside functions too.

# Bump when the build recipe below changes, so cached prefixes get rebuilt.
readonly RECIPE=1
readonly SOURCE_PACKAGES=(civetweb prometheus-cpp)
readonly BUILD_PACKAGES=(dpkg-dev cmake make g++)
readonly DEB_SRC_FILE=/etc/apt/sources.list.d/ferry-deb-src.sources
readonly DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${FERRY_DEPS_PREFIX:-$root/.deps}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)  # CMake needs an absolute install prefix.
cache=${FERRY_DEPS_CACHE:-$prefix/.build}
stamp=$prefix/ferry-static-deps.stamp
log=

step=
say() { step=$*; echo "build-static-deps: $*"; }

fail() {
  echo "build-static-deps: error: $*" >&2
  if [[ -n $log && -s $log ]]; then
    echo "build-static-deps: last lines of $log:" >&2
    tail -n 40 "$log" >&2
    echo "build-static-deps: failed; full log: $log" >&2
  fi
  exit 1
}
trap 'fail "unexpected failure (line $LINENO)"' ERR

# Keeps the terminal quiet; the full output is in the log for post-mortems.
quiet() {
  local cmd
  "$@" >>"$log" 2>&1 && return
  cmd="$*"
  ((${#cmd} <= 80)) || cmd="${cmd:0:77}..."
  fail "${step:+$step: }'$cmd' failed"
}

# Newest version of a source package that the configured deb-src entries
# offer; empty when there is none (no deb-src yet, or lists not fetched).
source_version() {
  local best='' v
  while read -r v; do
    if [[ -z $best ]] || dpkg --compare-versions "$v" gt "$best"; then
      best=$v
    fi
  done < <(apt-cache showsrc --only-source "$1" 2>/dev/null |
             sed -n 's/^Version: //p')
  echo "$best"
}

# The stamp names what was built; it is compared as a whole so that any change
# of a source version or of RECIPE triggers a rebuild.
wanted_stamp() {
  local pkg v
  echo "recipe $RECIPE"
  for pkg in "${SOURCE_PACKAGES[@]}"; do
    v=$(source_version "$pkg")
    [[ -n $v ]] || return 1
    echo "$pkg $v"
  done
}

is_built() {
  local want
  want=$(wanted_stamp) || return 1
  [[ -f $stamp && $(<"$stamp") == "$want" &&
     -f $prefix/lib/cmake/prometheus-cpp/prometheus-cpp-config.cmake &&
     -f $prefix/lib/libprometheus-cpp-pull.a &&
     -f $prefix/lib/libcivetweb-cpp.a ]]
}

if is_built; then
  say "up to date in $prefix ($(tr '\n' ' ' <"$stamp"| sed 's/ $//'))"
  exit 0
fi

[[ $(id -u) == 0 ]] || fail "needs root (apt-get); or build once as root and reuse $prefix"
mkdir -p "$cache"
# Two runs at once (CI and a developer) would overwrite each other's trees.
exec 9>"$cache/.lock"
flock 9
log=$cache/build.log
: >"$log"
if is_built; then  # Another run finished while this one waited.
  say "up to date in $prefix"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive

# deb-src entries: mirror the deb822 "Types: deb" stanzas in a file of our own,
# so the system's own sources file stays untouched.
say "checking deb-src entries"
added_src=0
other_src=$(grep -sElr --exclude="$(basename "$DEB_SRC_FILE")" \
  '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
  /etc/apt/sources.list /etc/apt/sources.list.d || true)
if [[ -f $DEB_SRC_FILE || -z $other_src ]]; then
  [[ -f $DEBIAN_SOURCES ]] ||
    fail "no $DEBIAN_SOURCES to derive deb-src entries from; add deb-src lines for bookworm by hand"
  want_src=$(awk 'BEGIN { RS = ""; FS = "\n" }
    {
      out = ""; is_deb = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^#/) continue
        if ($i ~ /^Types:/) {
          if ($i ~ /[: \t]deb([ \t]|$)/) is_deb = 1
          out = out "Types: deb-src\n"
        } else {
          out = out $i "\n"
        }
      }
      if (is_deb) printf "%s%s", (n++ ? "\n" : ""), out
    }' "$DEBIAN_SOURCES")
  [[ -n $want_src ]] || fail "no 'Types: deb' stanza in $DEBIAN_SOURCES"
  if [[ ! -f $DEB_SRC_FILE || $(<"$DEB_SRC_FILE") != "$want_src" ]]; then
    printf '%s\n' "$want_src" >"$DEB_SRC_FILE"
    added_src=1
    say "added $DEB_SRC_FILE"
  fi
fi

# A minbase system has never fetched package lists, so apt needs them too.
if ((added_src)) ||
   ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null ||
   ! compgen -G '/var/lib/apt/lists/*_Sources*' >/dev/null; then
  say "apt-get update"
  quiet apt-get update -q
fi

missing=()
for pkg in "${BUILD_PACKAGES[@]}"; do
  if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) != ii* ]]; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  # Stale lists give 404s; one refresh is the usual cure.
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

want=$(wanted_stamp) ||
  fail "apt-cache showsrc finds no source for ${SOURCE_PACKAGES[*]}; are the deb-src entries right?"
if is_built; then
  say "up to date in $prefix"
  exit 0
fi
rm -f "$stamp"

src=$cache/src
build=$cache/build
rm -rf "$src" "$build"
mkdir -p "$src" "$build"
declare -A srcdir
for pkg in "${SOURCE_PACKAGES[@]}"; do
  ver=$(source_version "$pkg")
  say "apt-get source $pkg=$ver"
  # Sandbox user root: the cache dir is root's, _apt could not write there.
  (cd "$src" && apt-get source -q --only-source \
     -o APT::Sandbox::User=root "$pkg=$ver") >>"$log" 2>&1 ||
    fail "apt-get source $pkg=$ver failed"
  # dpkg-source unpacks to <name>-<upstream version without epoch/revision>.
  upstream=${ver#*:}
  upstream=${upstream%-*}
  srcdir[$pkg]=$src/$pkg-$upstream
  [[ -f ${srcdir[$pkg]}/CMakeLists.txt ]] ||
    fail "apt-get source $pkg did not unpack to ${srcdir[$pkg]}"
done

# Debian's usual hardening; the metrics port faces the network.
hardening="-fstack-protector-strong -D_FORTIFY_SOURCE=2"
common_cmake=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$prefix"
  -DCMAKE_INSTALL_LIBDIR=lib
  -DBUILD_SHARED_LIBS=OFF
  # Lets the same archives go into a static-pie binary as well.
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON
  -DCMAKE_CXX_FLAGS="$hardening"
)

# civetweb: the defines match prometheus-cpp's own bundled-civetweb build
# (no CGI, no file serving, no SSL, short socket timeout quantum so that
# Exposer shuts down fast). LTO off: GCC's slim LTO objects in a plain
# static archive would not link without the LTO plugin.
say "building civetweb (static, NO_SSL)"
quiet cmake -S "${srcdir[civetweb]}" -B "$build/civetweb" "${common_cmake[@]}" \
  -DCMAKE_C_FLAGS="$hardening -DSOCKET_TIMEOUT_QUANTUM=200" \
  -DCIVETWEB_ENABLE_CXX=ON \
  -DCIVETWEB_ENABLE_SSL=OFF \
  -DCIVETWEB_ENABLE_SSL_DYNAMIC_LOADING=OFF \
  -DCIVETWEB_ENABLE_IPV6=ON \
  -DCIVETWEB_DISABLE_CGI=ON \
  -DCIVETWEB_DISABLE_CACHING=ON \
  -DCIVETWEB_SERVE_NO_FILES=ON \
  -DCIVETWEB_ENABLE_WEBSOCKETS=OFF \
  -DCIVETWEB_BUILD_TESTING=OFF \
  -DCIVETWEB_ENABLE_SERVER_EXECUTABLE=OFF \
  -DCIVETWEB_INSTALL_EXECUTABLE=OFF \
  -DCIVETWEB_CXX_ENABLE_LTO=OFF \
  -DCIVETWEB_ENABLE_ASAN=OFF
quiet cmake --build "$build/civetweb" -j2
quiet cmake --install "$build/civetweb"

# prometheus-cpp: civetweb_DIR pins the civetweb just built, never the bundled
# copy (USE_THIRDPARTY_LIBRARIES=OFF) nor a system libcivetweb-dev. No
# compression, so no zlib; no pkg-config files, whose absolute paths would
# make the prefix unmovable.
say "building prometheus-cpp (static core + pull)"
quiet cmake -S "${srcdir[prometheus-cpp]}" -B "$build/prometheus-cpp" "${common_cmake[@]}" \
  -DCMAKE_C_FLAGS="$hardening" \
  -Dcivetweb_DIR="$prefix/lib/cmake/civetweb" \
  -DUSE_THIRDPARTY_LIBRARIES=OFF \
  -DENABLE_PULL=ON \
  -DENABLE_PUSH=OFF \
  -DENABLE_COMPRESSION=OFF \
  -DENABLE_TESTING=OFF \
  -DGENERATE_PKGCONFIG=OFF
quiet cmake --build "$build/prometheus-cpp" -j2
quiet cmake --install "$build/prometheus-cpp"

# A consumer that sets prometheus-cpp_DIR instead of CMAKE_PREFIX_PATH would
# otherwise pick up a system (shared) civetweb, or none.
config=$prefix/lib/cmake/prometheus-cpp/prometheus-cpp-config.cmake
# shellcheck disable=SC2016  # ${CMAKE_CURRENT_LIST_DIR} is CMake's, not ours.
sed -i 's|^\([[:space:]]*\)find_dependency(civetweb)$|\1find_dependency(civetweb CONFIG HINTS "${CMAKE_CURRENT_LIST_DIR}/../civetweb")|' "$config"
grep -q 'find_dependency(civetweb CONFIG HINTS' "$config" ||
  say "warning: could not point $config at the bundled civetweb config"

rm -rf "$build"
printf '%s\n' "$want" >"$stamp.tmp"
mv "$stamp.tmp" "$stamp"
say "done: $prefix ($(tr '\n' ' ' <"$stamp" | sed 's/ $//'))"
