#!/bin/sh
# lambdawrap exec wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/wrapper.sh).
# The runtime calls it with the interpreter and the bootstrap script; it only sets variables
# and ends with exec. It finds its own folder, so the layer runs from anywhere.
# Variables are read as lambdawrap.shared.settings reads them (a test holds the two together).

# $1 without the blanks around it (in lw_v): the C locale's [:space:], as Settings strips
# them, whatever the locale (in Lambda's LANG=en_US.UTF-8 bash's [:space:] holds U+2003...).
lw_trim() {
  local LC_ALL=C
  lw_v=$1
  lw_v="${lw_v#"${lw_v%%[![:space:]]*}"}"
  lw_v="${lw_v%"${lw_v##*[![:space:]]}"}"
}

# The spellings of true that Settings accepts: case-insensitive, blanks around ignored.
lw_true() {
  lw_trim "$1"
  case "$lw_v" in
    1|[Tt][Rr][Uu][Ee]|[Yy][Ee][Ss]|[Oo][Nn]) return 0 ;;
  esac
  return 1
}

# A wrapper to chain to runs only if it can: a non-empty executable file this user can read,
# whose #! interpreter (if it names one) exists, and for env, the command env would run.
# Otherwise one warning, and the runtime starts as if it were unset. The line is read as the
# kernel reads it, in bytes.
lw_runnable() {
  local LC_ALL=C
  # An empty file is no program: the shell runs it as an empty script, which exits 0 without
  # starting the runtime.
  [ -f "$1" ] && [ -x "$1" ] && [ -s "$1" ] || return 1
  # One the function's user may run but not read: the interpreter its #! names cannot open it
  # (only a binary runs so, and one that a user cannot read is rare).
  if [ ! -r "$1" ]; then
    lw_why="not readable by this user"
    return 1
  fi
  # A first line without a newline after it is still the one that names the interpreter.
  lw_first=""
  IFS= read -r lw_first 2>/dev/null < "$1" || [ -n "$lw_first" ] || return 0
  case "$lw_first" in
    "#!"*) ;;
    *) return 0 ;;
  esac
  # The kernel's blanks are space and tab only: the interpreter ends at one, and the rest of
  # the line, trailing ones dropped, is its one argument, blanks inside kept.
  lw_line="${lw_first#\#!}"
  lw_line="${lw_line#"${lw_line%%[![:blank:]]*}"}"
  lw_line="${lw_line%"${lw_line##*[![:blank:]]}"}"
  # A file saved with Windows line ends: the kernel keeps the CR, in the interpreter's name
  # or in its argument, and neither runs (an interpreter given "-e<CR>" stops at it).
  case "$lw_line" in
    *[[:cntrl:]]) return 1 ;;
  esac
  lw_interp="${lw_line%%[[:blank:]]*}"
  lw_arg="${lw_line#"$lw_interp"}"
  lw_arg="${lw_arg#"${lw_arg%%[![:blank:]]*}"}"
  # A folder passes -x, but the kernel cannot run it.
  [ -f "$lw_interp" ] && [ -x "$lw_interp" ] || return 1
  case "$lw_interp" in
    */env) lw_env_runs "$lw_arg" ;;
  esac
}

# Whether env, handed $1 as the kernel hands it (one argument), runs a command that exists:
# one that is not found exits 127, and with no command of its own env runs the wrapper again,
# which execs env again, for ever. Either way the runtime never starts.
lw_env_runs() {
  lw_word=""
  case "$1" in
    # Only -S splits the argument, into options, VAR=value words and the command.
    --split-string=*) lw_words="${1#*=}" ;;
    -[!-]*) case "${1%%[[:blank:]]*}" in
              *S*) lw_words="${1#*S}" ;;
              *) return 1 ;;
            esac ;;
    -*) return 1 ;;
    # Without it the whole argument is one word: a VAR=value to set (and no command), or the
    # command's name, blanks and all ("sh -e" is not found).
    ""|*=*) return 1 ;;
    *) lw_word=$1 ;;
  esac
  lw_opt_arg=""
  while [ -z "$lw_word" ]; do
    lw_words="${lw_words#"${lw_words%%[![:blank:]]*}"}"
    lw_word="${lw_words%%[[:blank:]]*}"
    [ -n "$lw_word" ] || return 1
    lw_words="${lw_words#"$lw_word"}"
    if [ -n "$lw_opt_arg" ]; then
      lw_opt_arg=""
      lw_word=""
      continue
    fi
    case "$lw_word" in
      # Quotes, escapes, ${VAR} and comments are env's to read: such a line is not judged.
      \#*|*[\"\'\\\$]*) return 0 ;;
      # -u and -C take the next word: a name to unset, a folder, not the command.
      -u|-C|--unset|--chdir|-[!-]*[uC]) lw_opt_arg=1; lw_word="" ;;
      -*|*=*) lw_word="" ;;
    esac
  done
  case "$lw_word" in
    */*) [ -f "$lw_word" ] && [ -x "$lw_word" ] ;;
    *) command -v "$lw_word" >/dev/null 2>&1 ;;
  esac
}

# A next wrapper is handed this file as the interpreter to run (see the end), and runs it with
# the arguments it means for the interpreter: this is that second pass, which sets the boot up
# and execs the interpreter we were handed.
# (Another copy of this file, chained after ours, is a wrapper of its own: not our second pass.)
lw_chained=""
if [ -n "${LAMBDAWRAP_CHAINED_INTERPRETER+set}" ] && [ "$0" -ef "${LAMBDAWRAP_CHAINED_WRAPPER:-}" ]; then
  lw_chained=1
  set -- "$LAMBDAWRAP_CHAINED_INTERPRETER" "$@"
  unset LAMBDAWRAP_CHAINED_INTERPRETER LAMBDAWRAP_CHAINED_WRAPPER
fi
if [ -n "$lw_chained" ]; then
  lw_v=""
else
  lw_trim "${LAMBDAWRAP_NEXT_WRAPPER:-}"
fi
lw_given=$lw_v
lw_next=$lw_v
# The file checked is the one run: exec looks a name without a slash up on PATH, where the
# file in the working folder (/var/task on Lambda) is not, or another one of that name is.
case "$lw_next" in
  ""|*/*) ;;
  *) lw_next="./$lw_next" ;;
esac
lw_why="not an executable file"
if [ -n "$lw_next" ] && ! lw_runnable "$lw_next"; then
  printf '%s\n' "lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='$lw_given' ($lw_why); using the default (none)" >&2
  lw_next=""
fi
# Chaining to this very file would exec it again and again (PYTHONPATH growing each time)
# until exec fails and the runtime never starts.
if [ -n "$lw_next" ] && [ "$lw_next" -ef "$0" ]; then
  printf '%s\n' "lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='$lw_given' (lambdawrap's own wrapper); using the default (none)" >&2
  lw_next=""
fi

if lw_true "${LAMBDAWRAP_DISABLED:-}"; then
  [ -n "$lw_next" ] && exec "$lw_next" "$@"
  exec "$@"
fi

# Whether the runtime is Python's, and its script (lw_script): the managed Python runtimes hand
# us their interpreter (python3.X), then their script; the other languages' their own (node,
# java, ruby, dotnet), whose arguments may name Python (-Dpython.home=...). Another copy of this
# file chained after ours is handed ours, the interpreter in LAMBDAWRAP_CHAINED_INTERPRETER; a
# wrapper of the user's chained before ours may put a command in front (env FOO=1, nice -n 5).
lw_python_runtime() {
  lw_script=""
  lw_interpreter "$1"
  case $? in
    0) shift; lw_find_script "$@"; return 0 ;;
    1) return 1 ;;
  esac
  if lw_interpreter "${LAMBDAWRAP_CHAINED_INTERPRETER-}"; then
    lw_script=${2-}
    return 0
  fi
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -*|*=*) ;;  # the command's options, env's VAR=value words (PYTHONPATH=/opt/python)
      *)
        lw_interpreter "$1"
        case $? in
          0) shift; lw_find_script "$@"; return 0 ;;
          1) return 1 ;;
        esac
        ;;
    esac
    shift
  done
  return 1
}

# Which interpreter a word names, by its file's name: 0 Python's, 1 another language's, 2 none.
lw_interpreter() {
  case "${1##*/}" in
    python|python[0-9]*) return 0 ;;
    node|node[0-9]*|nodejs|java|ruby|ruby[0-9]*|dotnet) return 1 ;;
  esac
  return 2
}

# The interpreter's options, read as Python reads them, up to its script: the script
# (lw_script, the first word that is no option nor an option's value, when it is a file: a
# wrapper may put -X importtime before it), and an option that keeps the interpreter from
# starting lambdawrap (lw_isolated: -E and -I ignore PYTHONPATH, -S skips sitecustomize).
lw_find_script() {
  lw_isolated=""
  lw_opt_arg=""
  lw_end=""
  for lw_each in "$@"; do
    if [ -n "$lw_opt_arg" ]; then
      lw_opt_arg=""
      continue
    fi
    if [ -n "$lw_end" ]; then
      [ -f "$lw_each" ] && lw_script=$lw_each
      return 0
    fi
    case "$lw_each" in
      --) lw_end=1 ;;
      --check-hash-based-pycs) lw_opt_arg=1 ;;
      --*) ;;
      -?*)
        lw_opts=${lw_each#-}
        while [ -n "$lw_opts" ]; do
          lw_c=${lw_opts%"${lw_opts#?}"}
          lw_opts=${lw_opts#?}
          case "$lw_c" in
            E|I|S) lw_isolated="-$lw_c" ;;
            c|m) return 0 ;;  # a command or a module: no script
            W|X) [ -n "$lw_opts" ] || lw_opt_arg=1; break ;;  # the rest, or the next word, is its value
          esac
        done
        ;;
      *) [ -f "$lw_each" ] && lw_script=$lw_each; return 0 ;;
    esac
  done
  return 0
}

# Another language's runtime (the wrapper set for the functions of several languages at once)
# is none of ours: with our variables, a Python program it starts would take itself for the
# function's runtime.
lw_script=""
lw_isolated=""
if [ -z "$lw_chained" ] && [ $# -gt 0 ] && ! lw_python_runtime "$@"; then
  printf '%s\n' "lambdawrap: not instrumenting, the runtime '$1' is not a Python interpreter (lambdawrap instruments Python functions)" >&2
  [ -n "$lw_next" ] && exec "$lw_next" "$@"
  exec "$@"
fi

# The layer is the folder of this file, not of a symlink to it (AWS_LAMBDA_EXEC_WRAPPER may
# name one elsewhere): from the link's folder the boot would not be found, and the function
# would run uninstrumented with its PYTHONPATH changed.
lw_self="$0"
lw_linked=""
while [ -L "$lw_self" ]; do
  lw_link=$(readlink "$lw_self" 2>/dev/null) || break
  lw_linked=1
  case "$lw_link" in
    /*) lw_self="$lw_link" ;;
    *) case "$lw_self" in */*) lw_self="${lw_self%/*}/$lw_link" ;; *) lw_self="$lw_link" ;; esac ;;
  esac
done
case "$lw_self" in
  */*) here="${lw_self%/*}" ;;
  *) here="." ;;
esac
case "$here" in
  /*) ;;
  .) here="$PWD" ;;
  ./*) here="$PWD/${here#./}" ;;
  *) here="$PWD/$here" ;;
esac
# The kernel takes a `..` after the folder a symlink names, Python takes PYTHONPATH's by its
# text: "link/../x" would be two different folders. Such a path is made physical (one fork,
# only then), as is one holding a ':' (below), which a symlink's name may be alone in holding.
case "$lw_linked$here" in
  1*|*/..|*/../*|*/.|*/./*|*:*) lw_real=$(cd -P -- "$here" 2>/dev/null && pwd -P) && here=$lw_real ;;
esac

# A layer copied in part (no boot) could not put the environment back, nor can a folder whose
# name holds PYTHONPATH's separator be put on it: run as without the layer.
boot="$here/python/lambdawrap_boot"
lw_unusable=""
case "$here" in
  *:*) lw_unusable="the layer's folder $here holds a ':', which PYTHONPATH cannot name" ;;
  *) [ -f "$boot/sitecustomize.py" ] || lw_unusable="$boot/sitecustomize.py is missing (a layer copied in part?)" ;;
esac
if [ -n "$lw_unusable" ]; then
  printf '%s\n' "lambdawrap: not instrumenting, $lw_unusable" >&2
  [ -n "$lw_next" ] && exec "$lw_next" "$@"
  exec "$@"
fi

# A next wrapper runs before the boot is set up, and is handed this file in place of the
# interpreter: it sees the environment it sees without the layer, and its own changes
# (PYTHONPATH first of all) are made before ours. Set up before it, a sitecustomize of its own
# put first on PYTHONPATH (opentelemetry-instrument's) shadowed ours and left our variables in
# the function's environment. Its arguments for the interpreter (-X importtime) come back here.
if [ -n "$lw_next" ] && [ $# -gt 0 ]; then
  if [ -f "$lw_script" ]; then
    export LAMBDAWRAP_RUNTIME_SCRIPT="$lw_script"
  fi
  export LAMBDAWRAP_CHAINED_INTERPRETER="$1" LAMBDAWRAP_CHAINED_WRAPPER="$here/${lw_self##*/}"
  shift
  exec "$lw_next" "$LAMBDAWRAP_CHAINED_WRAPPER" "$@"
fi

# An interpreter started with -E, -I or -S (a hardening wrapper's) never runs the boot, which
# puts the environment back: left set, PYTHONPATH would keep the runtime from adding the
# layers' folders, and the function's imports from them would fail. It runs as without us.
if [ -n "$lw_chained" ]; then
  lw_python_runtime "$@" || :  # the next wrapper's command line, a command before Python's too
fi
if [ -n "$lw_isolated" ]; then
  printf '%s\n' "lambdawrap: not instrumenting, the interpreter runs with $lw_isolated, which keeps Python from starting lambdawrap (-E and -I ignore PYTHONPATH, -S skips sitecustomize)" >&2
  unset LAMBDAWRAP_RUNTIME_SCRIPT
  exec "$@"
fi

# PYTHONPATH carries our boot folder only (its sitecustomize.py is how lambdawrap starts, and
# finds the package beside it). Not the layer folders the runtime adds later: on PYTHONPATH
# they would come before the standard library while the boot imports it, and another layer's
# enum.py there (an old enum34) would stand in for the standard one, which the runtime's
# bootstrap imports before it adds them. The boot puts PYTHONPATH back as it was
# (LAMBDAWRAP_ADDED_PATHS, LAMBDAWRAP_PYTHONPATH_UNSET) before bootstrap.py reads it, so the
# function's sys.path is the one it has without the layer.
if [ -z "${PYTHONPATH+set}" ]; then
  PYTHONPATH="$boot"
  export LAMBDAWRAP_PYTHONPATH_UNSET=1
elif [ -n "$PYTHONPATH" ]; then
  PYTHONPATH="$boot:$PYTHONPATH"
else
  PYTHONPATH="$boot"
fi
export PYTHONPATH
export LAMBDAWRAP_BOOT_DIR="$boot" LAMBDAWRAP_ADDED_PATHS="$boot"
# The runtime's script (the bootstrap hands us the interpreter and it): only the process that
# runs it is instrumented, not a Python process on the way (a `python -c` a next wrapper runs
# with the interpreter it was handed). A chained pass keeps the one the first pass named.
if [ -z "$lw_chained" ] && [ -f "$lw_script" ]; then
  export LAMBDAWRAP_RUNTIME_SCRIPT="$lw_script"
fi

exec "$@"
