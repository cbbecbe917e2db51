import Foundation
import XCTest

/// `promtool check metrics` (Debian's prometheus package; CI installs it):
/// Prometheus' own lint of an exposition.
public enum Promtool {
    /// Checks `exposition`; fails the test with promtool's report if it finds
    /// anything. Without promtool the check is skipped, except under CI.
    public static func check(_ exposition: String, file: StaticString = #filePath, line: UInt = #line) throws {
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { XCTFail("CI installs promtool (Debian's prometheus)", file: file, line: line) }
            return
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtool)
        process.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        input.fileHandleForWriting.write(Data(exposition.utf8))
        try input.fileHandleForWriting.close()
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "promtool check metrics: \(report)", file: file, line: line)
        XCTAssertEqual(report.trimmingCharacters(in: .whitespacesAndNewlines), "", "promtool check metrics: \(report)", file: file, line: line)
    }
}
