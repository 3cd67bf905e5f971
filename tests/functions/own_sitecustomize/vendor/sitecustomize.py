import os

os.environ["OWN_SITECUSTOMIZE"] = "began"
raise RuntimeError("this sitecustomize is broken")
