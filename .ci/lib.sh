# Shared by .ci/run and .ci/container (sourced).

# Debian packages a step needs, installed when missing (CI runs as root; sudo otherwise).
apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    local as_root=()
    [[ $(id -u) -eq 0 ]] || as_root=(sudo)
    echo "ci: installing ${missing[*]}" >&2
    "${as_root[@]}" apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q "${missing[@]}" >/dev/null
}
