import Foundation
import XCTest

/// Headless Chromium (Debian's `chromium`) for page tests: a screenshot of a
/// page, what its console printed, and how many pixels of given colours the
/// screenshot holds (`Tests/Fixtures/screenshots/png_colors.py`).
enum Chromium {
    static let path = "/usr/bin/chromium"

    /// Nil when Chromium is not installed (a failure under CI, which installs it).
    static func available() -> Bool {
        if FileManager.default.isExecutableFile(atPath: path) { return true }
        if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("CI has no \(path) (Debian's chromium)") }
        return false
    }

    /// Loads `url` (letting its scripts run for `virtualTime` ms) and writes a
    /// screenshot into `folder`; returns it and the browser's log (console
    /// messages included, as `CONSOLE` lines).
    static func screenshot(_ url: String, width: Int, height: Int, in folder: URL, virtualTime: Int = 5_000) throws -> (png: URL, log: String) {
        let shot = folder.appendingPathComponent("shot-\(UUID().uuidString).png")
        let browser = Process()
        browser.executableURL = URL(fileURLWithPath: path)
        browser.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=\(width),\(height)",
                             "--virtual-time-budget=\(virtualTime)", "--enable-logging=stderr", "--v=0",
                             "--user-data-dir=\(folder.appendingPathComponent("chromium").path)", "--screenshot=\(shot.path)", url]
        let log = Pipe()
        browser.standardOutput = FileHandle.nullDevice
        browser.standardError = log
        try browser.run()
        // Read until Chromium exits (it closes its end); a hung browser is ended after a minute.
        let watchdog = DispatchWorkItem { if browser.isRunning { browser.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 60, execute: watchdog)
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        browser.waitUntilExit()
        watchdog.cancel()
        XCTAssertTrue(FileManager.default.fileExists(atPath: shot.path), "chromium wrote no screenshot: \(text.suffix(2000))")
        return (shot, text)
    }

    /// Pixels near each colour (hex RGB) in `png`.
    static func colorCounts(_ png: URL, _ colors: [String]) throws -> [Int] {
        let counter = Process()
        counter.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/screenshots/png_colors.py").path
        counter.arguments = ["python3", script, png.path] + colors
        let out = Pipe()
        counter.standardOutput = out
        try counter.run()
        let counts = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        counter.waitUntilExit()
        XCTAssertEqual(counts.count, colors.count, "png_colors.py failed")
        return counts
    }
}
