import Foundation
import Prometheus

/// The process's own figures, read from /proc at each scrape (Linux; the
/// gauges stay at zero elsewhere): resident and virtual memory, open file
/// descriptors and their limit, bytes of files mapped into memory (a match
/// server's segments), and when it started.
enum ProcessMetrics {
    static func update(_ registry: PrometheusCollectorRegistry) {
        let gauges = Gauges.of(registry)
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let fields = statm.split(separator: " ").compactMap { Double($0) }
            if fields.count >= 2 {
                gauges.virtual.set(fields[0] * page)
                gauges.resident.set(fields[1] * page)
            }
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            gauges.openFDs.set(Double(fds.count))
        }
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            gauges.maxFDs.set(Double(limit.rlim_cur))
        }
        if let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) {
            gauges.mapped.set(Double(mappedFileBytes(maps)))
        }
        gauges.start.set(startTime)
    }

    /// Bytes of the file-backed mappings in a /proc/PID/maps text.
    static func mappedFileBytes(_ maps: String) -> UInt64 {
        var total: UInt64 = 0
        for line in maps.split(separator: "\n") {
            // start-end perms offset dev inode path
            let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count == 6, fields[4] != "0", fields[5].hasPrefix("/") else { continue }
            let range = fields[0].split(separator: "-")
            guard range.count == 2, let start = UInt64(range[0], radix: 16), let end = UInt64(range[1], radix: 16), end > start else { continue }
            total += end - start
        }
        return total
    }

    /// When this process started: its start in clock ticks after boot
    /// (/proc/self/stat, field 22) plus the boot time (/proc/stat's btime).
    static let startTime: Double = {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let bootLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(bootLine.dropFirst(6)) else { return Date().timeIntervalSince1970 }
        // After "pid (comm)", fields start at 3 (state): starttime, field 22, is the 20th.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let ticks = Double(fields[19]) else { return Date().timeIntervalSince1970 }
        return boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }()

    private struct Gauges {
        var resident, virtual, openFDs, maxFDs, mapped, start: Gauge

        static func of(_ registry: PrometheusCollectorRegistry) -> Gauges {
            Gauges(
                resident: registry.makeGauge(name: "process_resident_memory_bytes", help: "Resident memory size in bytes."),
                virtual: registry.makeGauge(name: "process_virtual_memory_bytes", help: "Virtual memory size in bytes."),
                openFDs: registry.makeGauge(name: "process_open_fds", help: "Number of open file descriptors."),
                maxFDs: registry.makeGauge(name: "process_max_fds", help: "Maximum number of open file descriptors."),
                mapped: registry.makeGauge(name: "roster_process_mapped_file_bytes",
                                           help: "Bytes of files mapped into memory (a match server's segments, and the binary's libraries)."),
                start: registry.makeGauge(name: "process_start_time_seconds", help: "Start time of the process since the Unix epoch in seconds."))
        }
    }
}
