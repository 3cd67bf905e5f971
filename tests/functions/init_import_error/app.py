import no_such_dependency_anywhere  # the module the deploy forgot

def handler(event, context):
    return "never"
