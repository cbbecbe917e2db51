import Foundation
import PackagePlugin

/// Writes `BuildInfo.swift` for the `roster` binary before every build: the
/// commit it is built from (with `-modified` when tracked files differ from
/// it), that commit's date, and the day of the build, for `roster --version`.
///
/// A prebuild command, so that it runs at every build (a new commit changes
/// nothing SwiftPM can see); the file is replaced only when its text
/// changes, so a build with nothing new compiles nothing. Outside a git
/// checkout (a source archive) the commit reads "unknown".
@main
struct BuildInfo: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let out = context.pluginWorkDirectoryURL.appendingPathComponent("Generated")
        let file = out.appendingPathComponent("BuildInfo.swift").path
        let root = context.package.directoryURL.path
        let script = """
            mkdir -p '\(out.path)'
            commit=$(git -C '\(root)' rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
            if [ "$commit" != unknown ] && ! git -C '\(root)' diff --quiet HEAD 2>/dev/null; then commit="$commit-modified"; fi
            committed=$(git -C '\(root)' log -1 --format=%cs 2>/dev/null || echo unknown)
            built=$(date -u +%Y-%m-%d)
            tmp='\(file).tmp'
            printf '/// Written before each build by Plugins/BuildInfo.\\nenum BuildInfo {\\n    static let commit = "%s"\\n    static let commitDate = "%s"\\n    static let buildDate = "%s"\\n}\\n' \\
              "$commit" "$committed" "$built" > "$tmp"
            if cmp -s "$tmp" '\(file)'; then rm -f "$tmp"; else mv "$tmp" '\(file)'; fi
            """
        return [.prebuildCommand(displayName: "Recording the commit for roster --version", executable: URL(fileURLWithPath: "/bin/sh"),
                                 arguments: ["-c", script], outputFilesDirectory: out)]
    }
}
