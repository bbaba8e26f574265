// Node-RED settings for the side-by-side benchmark (python -m tests.benchmarks.nodered): no
// editor, no admin API, no palette installs; function nodes may load better-sqlite3, which the
// benchmark installs beside Node-RED in the user folder.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.BENCH_NODERED_UI_PORT),
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    functionExternalModules: true,
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false },
    editorTheme: { projects: { enabled: false } },
    logging: { console: { level: "info", metrics: false, audit: false } },
};
