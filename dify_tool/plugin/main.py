from dify_plugin import DifyPluginEnv, Plugin

# Rendering takes minutes: let a tool call run up to the daemon's limit (the tools stop at 540 s).
plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=600))

if __name__ == "__main__":
    plugin.run()
