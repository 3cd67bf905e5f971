#!/bin/sh
# lambdawrap exec wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/wrapper.sh).
# The runtime calls it with the interpreter and the bootstrap script; it only sets variables
# and ends with exec. It finds its own folder, so the layer runs from anywhere.
if [ "${LAMBDAWRAP_DISABLED:-}" = "true" ] || [ "${LAMBDAWRAP_DISABLED:-}" = "1" ]; then
  exec "$@"
fi

case "$0" in
  */*) here="${0%/*}" ;;
  *) here="." ;;
esac
case "$here" in
  /*) ;;
  .) here="$PWD" ;;
  ./*) here="$PWD/${here#./}" ;;
  *) here="$PWD/$here" ;;
esac

boot="$here/python/lambdawrap_boot"
if [ -z "${PYTHONPATH+set}" ]; then
  # Setting PYTHONPATH makes bootstrap.py skip the layer paths it would have added; put them
  # back in the order it uses (site-packages of the layer first, then /opt/python).
  case "${AWS_EXECUTION_ENV:-}" in
    AWS_Lambda_python*) PYTHONPATH="$boot:$here/python/lib/${AWS_EXECUTION_ENV#AWS_Lambda_}/site-packages:$here/python" ;;
    *) PYTHONPATH="$boot:$here/python" ;;
  esac
elif [ -n "$PYTHONPATH" ]; then
  PYTHONPATH="$boot:$PYTHONPATH"
else
  PYTHONPATH="$boot"
fi
export PYTHONPATH
export LAMBDAWRAP_BOOT_DIR="$boot"

if [ -n "${LAMBDAWRAP_NEXT_WRAPPER:-}" ]; then
  exec "$LAMBDAWRAP_NEXT_WRAPPER" "$@"
fi
exec "$@"
