"""Search, whatever runs it: ``warm_start`` (rank → transfer → optional guidance) and the
candidate pipeline (build → warm start → train → measure) every search back end reuses.
"""
