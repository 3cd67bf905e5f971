import sys
print("exiting at import")
sys.exit(2)
