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

# A wrapper to chain to runs only if it can: an executable file whose #! interpreter (if it
# names one) exists. Otherwise one warning, and the runtime starts as if it were unset.
lw_runnable() {
  [ -f "$1" ] && [ -x "$1" ] || return 1
  # A first line without a newline after it is still the one that names the interpreter.
  lw_first=""
  IFS= read -r lw_first < "$1" 2>/dev/null || [ -n "$lw_first" ] || return 0
  case "$lw_first" in
    "#!"*) lw_interp="${lw_first#\#!}"; lw_interp="${lw_interp#"${lw_interp%%[![:space:]]*}"}"; lw_interp="${lw_interp%%[[:space:]]*}"
           [ -x "$lw_interp" ] || return 1 ;;
  esac
  return 0
}

lw_trim "${LAMBDAWRAP_NEXT_WRAPPER:-}"
lw_given=$lw_v
lw_next=$lw_v
# The file checked is the one run: exec looks a name without a slash up on PATH, where the
# file in the working folder (/var/task on Lambda) is not, or another one of that name is.
case "$lw_next" in
  ""|*/*) ;;
  *) lw_next="./$lw_next" ;;
esac
if [ -n "$lw_next" ] && ! lw_runnable "$lw_next"; then
  echo "lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='$lw_given' (not an executable file); using the default (none)" >&2
  lw_next=""
fi
# Chaining to this very file would exec it again and again (PYTHONPATH growing each time)
# until exec fails and the runtime never starts.
if [ -n "$lw_next" ] && [ "$lw_next" -ef "$0" ]; then
  echo "lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='$lw_given' (lambdawrap's own wrapper); using the default (none)" >&2
  lw_next=""
fi

if lw_true "${LAMBDAWRAP_DISABLED:-}"; then
  [ -n "$lw_next" ] && exec "$lw_next" "$@"
  exec "$@"
fi

# The layer is the folder of this file, not of a symlink to it (AWS_LAMBDA_EXEC_WRAPPER may
# name one elsewhere): from the link's folder the boot would not be found, and the function
# would run uninstrumented with its PYTHONPATH changed.
lw_self="$0"
while [ -L "$lw_self" ]; do
  lw_link=$(readlink "$lw_self" 2>/dev/null) || break
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

# PYTHONPATH carries our boot folder (its sitecustomize.py is how lambdawrap starts) and, when
# it was unset, the layer's folders, where lambdawrap's own package lives. The boot puts both
# back as they were (LAMBDAWRAP_ADDED_PATHS, LAMBDAWRAP_PYTHONPATH_UNSET) before the runtime's
# bootstrap.py reads them, so the function's sys.path is the one it has without the layer.
boot="$here/python/lambdawrap_boot"
if [ -z "${PYTHONPATH+set}" ]; then
  case "${AWS_EXECUTION_ENV:-}" in
    AWS_Lambda_python*) added="$boot:$here/python/lib/${AWS_EXECUTION_ENV#AWS_Lambda_}/site-packages:$here/python" ;;
    *) added="$boot:$here/python" ;;
  esac
  PYTHONPATH="$added"
  export LAMBDAWRAP_PYTHONPATH_UNSET=1
elif [ -n "$PYTHONPATH" ]; then
  added="$boot"
  PYTHONPATH="$boot:$PYTHONPATH"
else
  added="$boot"
  PYTHONPATH="$boot"
fi
export PYTHONPATH
export LAMBDAWRAP_BOOT_DIR="$boot" LAMBDAWRAP_ADDED_PATHS="$added"
# The runtime's script (the bootstrap hands us the interpreter and it): only the process that
# runs it is instrumented, not a Python process on the way (a next wrapper written in Python).
if [ -f "${2:-}" ]; then
  export LAMBDAWRAP_RUNTIME_SCRIPT="$2"
fi

[ -n "$lw_next" ] && exec "$lw_next" "$@"
exec "$@"
