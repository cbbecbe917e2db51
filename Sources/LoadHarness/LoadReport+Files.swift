import Foundation
import Histogram

/// The report as files people look at: a CSV of the seconds, and one HTML
/// page with the plots — inline SVG, no script, no network — that opens
/// anywhere, offline.
extension LoadReport {
    /// One row per second of the run.
    public var csv: String {
        var out = "second,asked_calls_per_second,calls_per_second,errors,p50_ms,p99_ms,in_flight,sender_lag_ms\n"
        for t in timeline {
            out += String(format: "%d,%.0f,%d,%d,%.3f,%.3f,%d,%.3f\n", t.second, t.asked, t.calls, t.errors,
                          t.p50.ms, t.p99.ms, t.inFlight, t.lag.ms)
        }
        return out
    }

    /// The page: the verdict, a summary, latency by percentile (the axis
    /// stretched towards the tail, as HdrHistogram's plotter draws it), and
    /// calls/s with p99 over time.
    public func html(title: String) -> String {
        let verdict = shortfall.map { "NOT held: \(Self.escape($0))" } ?? "held: every call sent on time and answered"
        var rows: [(String, String)] = [
            ("asked", String(format: "%.0f calls/s (mean) for %.1f s", asked, duration.seconds)),
            ("achieved", String(format: "%.0f calls/s, %d calls in %.1f s", callsPerSecond, calls, elapsed.seconds)),
            ("latency from intended send time", [50, 90, 99, 99.9, 99.99].map { String(format: "p%g %.3f ms", $0, percentile($0).ms) }
                .joined(separator: " · ") + String(format: " · max %.3f ms", max.ms)),
            ("statuses", (["OK \(ok)"] + errors.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }).joined(separator: ", ")),
            ("wrong answers", "\(wrongAnswers)"),
        ]
        if hits + misses > 0 { rows.append(("keys matched / not", "\(hits) / \(misses)")) }
        if unsent > 0 { rows.append(("unsent", "\(unsent) calls the harness could not send before the schedule ended")) }
        rows.append(("sender lag (most)", String(format: "%.1f ms", maxLag.ms)))
        if let micros = harnessMicrosecondsPerCall, let cpu = harnessCPU {
            rows.append(("harness CPU", String(format: "%.2f µs per call, %.0f%% of one core", micros, 100 * cpu.seconds / Swift.max(0.001, elapsed.seconds))))
        }
        let table = rows.map { "<tr><th>\(Self.escape($0.0))</th><td>\(Self.escape($0.1))</td></tr>" }.joined(separator: "\n")
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(Self.escape(title))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 880px; color: #222; }
            h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
            .held { color: #2a7a2a; } .short { color: #b02020; }
            table { border-collapse: collapse; } th, td { text-align: left; padding: 3px 12px 3px 0; vertical-align: top; }
            th { font-weight: 600; color: #555; white-space: nowrap; }
            svg { background: #fff; border: 1px solid #ddd; }
            svg text { font: 11px system-ui, sans-serif; fill: #444; }
            .grid { stroke: #eee; } .axis { stroke: #999; }
            .curve { fill: none; stroke: #2ca02c; stroke-width: 2.5; }
            .calls { fill: none; stroke: #1f77b4; stroke-width: 2.5; }
            .asked { fill: none; stroke: #888; stroke-width: 1.5; stroke-dasharray: 6 4; }
            .p99 { fill: none; stroke: #d62728; stroke-width: 2.5; }
            </style></head><body>
            <h1>\(Self.escape(title))</h1>
            <p class="\(shortfall == nil ? "held" : "short")"><strong>\(verdict)</strong></p>
            <table>
            \(table)
            </table>
            <h2>Latency by percentile</h2>
            \(percentilePlot())
            <h2>Calls per second (blue; asked: dashed) and p99 (red), each second</h2>
            \(timelinePlot())
            </body></html>

            """
    }

    private static let width = 820.0, height = 340.0, left = 64.0, right = 64.0, top = 16.0, bottom = 40.0

    /// x: percentile on a log scale of 1/(1-p) (0%, 90%, 99%, … 99.999%); y: ms.
    private func percentilePlot() -> String {
        let (w, h, l, r, t, b) = (Self.width, Self.height, Self.left, Self.right, Self.top, Self.bottom)
        let decades = 5.0
        var points: [(Double, Double)] = []
        for step in histogram.percentiles(ticksPerHalfDistance: 5) {
            let p = Swift.min(step.percentile / 100, 1 - pow(10, -decades))
            points.append((log10(1 / (1 - p)), Double(step.value) / 1000))
        }
        let top = Self.niceCeiling(Swift.max(points.map(\.1).max() ?? 1, 0.001))
        func x(_ v: Double) -> Double { l + (w - l - r) * v / decades }
        func y(_ v: Double) -> Double { h - b - (h - t - b) * v / top }
        var svg = "<svg id=\"percentiles\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].enumerated() {
            let xv = x(Double(i))
            svg += line(xv, t, xv, h - b, "grid") + text(xv, h - b + 16, label, anchor: "middle")
        }
        let n = Self.intervals(top)
        for i in 0...n {
            let v = top * Double(i) / Double(n)
            svg += line(l, y(v), w - r, y(v), "grid") + text(l - 6, y(v) + 4, Self.number(v) + " ms", anchor: "end")
        }
        svg += line(l, h - b, w - r, h - b, "axis") + line(l, t, l, h - b, "axis")
        svg += text((l + w - r) / 2, h - 6, "percentile", anchor: "middle")
        svg += polyline(points.map { (x($0.0), y($0.1)) }, "curve")
        return svg + "</svg>"
    }

    /// x: seconds; left y: calls/s (achieved and asked); right y: p99 ms.
    private func timelinePlot() -> String {
        let (w, h, l, r, t, b) = (Self.width, Self.height, Self.left, Self.right, Self.top, Self.bottom)
        let seconds = Double(Swift.max(1, timeline.map(\.second).max() ?? 1))
        let rateTop = Self.niceCeiling(Swift.max(1, timeline.map { Swift.max(Double($0.calls), $0.asked) }.max() ?? 1))
        let latencyTop = Self.niceCeiling(Swift.max(0.001, timeline.map(\.p99.ms).max() ?? 1))
        func x(_ s: Double) -> Double { l + (w - l - r) * s / seconds }
        func yRate(_ v: Double) -> Double { h - b - (h - t - b) * v / rateTop }
        func yLatency(_ v: Double) -> Double { h - b - (h - t - b) * v / latencyTop }
        var svg = "<svg id=\"timeline\" width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" xmlns=\"http://www.w3.org/2000/svg\">"
        let n = Self.intervals(rateTop)
        for i in 0...n {
            let f = Double(i) / Double(n)
            svg += line(l, yRate(rateTop * f), w - r, yRate(rateTop * f), "grid")
            svg += text(l - 6, yRate(rateTop * f) + 4, Self.number(rateTop * f), anchor: "end")
        }
        let m = Self.intervals(latencyTop)
        for i in 0...m {
            let v = latencyTop * Double(i) / Double(m)
            svg += text(w - r + 6, yLatency(v) + 4, Self.number(v) + " ms", anchor: "start")
        }
        let ticks = Swift.min(10, Int(seconds))
        for i in 0...ticks {
            let s = seconds * Double(i) / Double(Swift.max(1, ticks))
            svg += text(x(s), h - b + 16, String(format: "%.0fs", s), anchor: "middle")
        }
        svg += line(l, h - b, w - r, h - b, "axis") + line(l, t, l, h - b, "axis") + line(w - r, t, w - r, h - b, "axis")
        svg += text(l, t - 4 + 12, "calls/s", anchor: "start") + text(w - r, t - 4 + 12, "p99", anchor: "end")
        svg += polyline(timeline.map { (x(Double($0.second)), yRate($0.asked)) }, "asked")
        svg += polyline(timeline.map { (x(Double($0.second)), yRate(Double($0.calls))) }, "calls")
        svg += polyline(timeline.map { (x(Double($0.second)), yLatency($0.p99.ms)) }, "p99")
        return svg + "</svg>"
    }

    private func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ kind: String) -> String {
        String(format: "<line class=\"%@\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>", kind, x1, y1, x2, y2)
    }

    private func text(_ x: Double, _ y: Double, _ content: String, anchor: String) -> String {
        String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%@\">%@</text>", x, y, anchor, Self.escape(content))
    }

    private func polyline(_ points: [(Double, Double)], _ kind: String) -> String {
        guard !points.isEmpty else { return "" }
        return "<polyline class=\"\(kind)\" points=\"" + points.map { String(format: "%.1f,%.1f", $0.0, $0.1) }.joined(separator: " ") + "\"/>"
    }

    /// Grid intervals that land on round numbers for a `niceCeiling` top:
    /// 1 and 5 in fifths, 2 in quarters.
    static func intervals(_ top: Double) -> Int {
        let leading = top / pow(10, floor(log10(top)))
        return abs(leading - 2) < 0.01 ? 4 : 5
    }

    /// The next of 1, 2, 5 × 10^n at or above `value`.
    static func niceCeiling(_ value: Double) -> Double {
        let magnitude = pow(10, floor(log10(value)))
        for step in [1.0, 2, 5, 10] where step * magnitude >= value { return step * magnitude }
        return 10 * magnitude
    }

    static func number(_ v: Double) -> String {
        if v == 0 { return "0" }
        if v >= 1000 {
            let k = v / 1000
            return k == k.rounded() ? String(format: "%.0fk", k) : String(format: "%.1fk", k)
        }
        if v >= 10 { return String(format: "%.0f", v) }
        if v >= 1 { return String(format: "%.1f", v) }
        return String(format: "%.2f", v)
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
