# bash completion for livemig. Install as
# /usr/share/bash-completion/completions/livemig (or source it).
# The options come from the command's own `livemig COMMAND --help`, so the
# completion never lags behind the command line.

_livemig_options() {
    "$1" "$2" --help 2>/dev/null | sed -n 's/^  \(--[a-z0-9-]*\).*/\1/p'
}

_livemig() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local prog=${COMP_WORDS[0]} sub=${COMP_WORDS[1]:-}
    COMPREPLY=()
    if [ "$COMP_CWORD" -eq 1 ]; then
        mapfile -t COMPREPLY < <(compgen -W "migrate incoming demo plot kvm-check --help --version" -- "$cur")
        return
    fi
    case $prev in
    --stats-json | --dest-stats-json | --timeline | --tls-psk | -o | --output)
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return ;;
    --tls-creds)
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        return ;;
    --compress)
        mapfile -t COMPREPLY < <(compgen -W "none zlib zstd lz4" -- "$cur")
        return ;;
    --zero-page-detection)
        mapfile -t COMPREPLY < <(compgen -W "multifd legacy none" -- "$cur")
        return ;;
    --dirty-tracker)
        mapfile -t COMPREPLY < <(compgen -W "auto uffd-async uffd-sync kvm-log kvm-ring" -- "$cur")
        return ;;
    --guest)
        mapfile -t COMPREPLY < <(compgen -W "thread kvm" -- "$cur")
        return ;;
    --to | --listen | --qmp)
        mapfile -t COMPREPLY < <(compgen -W "tcp: unix: fd: defer" -- "$cur")
        compopt -o nospace 2>/dev/null
        return ;;
    --workload)
        mapfile -t COMPREPLY < <(compgen -W "idle fill: text: stress: hot: random:" -- "$cur")
        compopt -o nospace 2>/dev/null
        return ;;
    esac
    if [ "$sub" = plot ]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "-o --title --help" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
        return
    fi
    mapfile -t COMPREPLY < <(compgen -W "$(_livemig_options "$prog" "$sub")" -- "$cur")
}

complete -F _livemig livemig
