import os
print("loading, then failing")
raise ValueError("cannot start: " + os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "?"))

def handler(event, context):
    return 1
