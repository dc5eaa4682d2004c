# shellcheck shell=bash
# Helpers shared by the launch/ scripts (sourced, not run): errors, option values, dry runs.

# Prints "<script>: <message>" to stderr and exits 2 (a usage error).
die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Checks that option $1 got a value ($2 = number of remaining words, $3 = the value).
need_value() {
  if (($2 < 2)) || [[ "$3" == --* ]]; then
    die "option $1 needs a value (see --help)"
  fi
}

# Checks that required option $1 was given (value $2).
require() {
  [[ -n "$2" ]] || die "missing required option $1 (see --help)"
}

# Prints one word so that a POSIX shell reads it back unchanged (like Python's shlex.quote).
quote_word() {
  local squote="'" escaped="'\\''"
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//${squote}/${escaped}}"
  fi
}

# Joins words into one shell-quoted line (for printing, and for commands that run remotely).
quote_all() {
  local word line=""
  for word in "$@"; do
    line+=" $(quote_word "${word}")"
  done
  echo "${line# }"
}

# Prints a command (copy-pastable) after '+ ', then runs it unless DRY_RUN=1.
run() {
  echo "+ $(quote_all "$@")"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    "$@"
  fi
}

# Exports NAME=VALUE and prints it like a command, so dry runs show the environment too.
export_var() {
  echo "+ export $1=$(quote_word "$2")"
  export "$1=$2"
}
