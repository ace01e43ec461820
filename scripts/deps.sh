# Sourced by scripts/run and scripts/test: installs the Debian packages
# claimer needs when any is missing (apt-get update first), quietly when
# all are there already.
claimer_packages="gcc pkg-config meson ninja-build libpq-dev libuv1-dev
  libyaml-dev libjson-c-dev libcmocka-dev libcurl4-openssl-dev libmicrohttpd-dev
  libssl-dev
  postgresql postgresql-server-dev-15
  valgrind clang-format"

claimer_install_deps() {
  local missing=""
  for p in $claimer_packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "installing:$missing"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null &&
    $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    { echo "apt-get install failed for:$missing" >&2; return 1; }
}

# claimer_build DIR [meson options...]: configures DIR once, then builds.
claimer_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 ||
      { cat "$dir.setup.log" >&2; return 1; }
  fi
  ninja -C "$dir" >"$dir.build.log" 2>&1 ||
    { grep -v '^\[' "$dir.build.log" >&2; return 1; }
}
