def other(event, context):
    return 1
