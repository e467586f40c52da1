# Sourced by recipes after their defaults: `--some-option VALUE` sets the shell variable
# some_option (which the recipe must have defined); -h/--help prints the recipe's header comment.
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    --*)
      name=${1#--}; name=${name//-/_}
      if [ -z "${!name+x}" ] || [ $# -lt 2 ]; then
        echo "$0: unknown option or missing value: $1 (see --help)" >&2; exit 2
      fi
      printf -v "$name" '%s' "$2"; shift 2 ;;
    *) echo "$0: unexpected argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
