"""keyhealth's command line for platform engineers and ops (`keyhealth --help`, `python -m keyhealth_cli`).

A product tool of its own: it talks to the keyhealth API over HTTP and needs only httpx and botocore,
never the `keyhealth` library the Lambdas share.

    main     the argument parser, secret input and the commands
    api      ApiClient: SigV4-signed for a deployed stack, unsigned with a principal for the local one
    render   tables, binding and report descriptions, audit summaries, the progress bar
    errors   CliError and the exit codes
"""
