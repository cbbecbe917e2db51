import ArgumentParser
import DataLake
import Foundation
import Logging
import ObjectStorage
import SegmentStore

/// How to reach an S3-compatible service, for `--lake s3://…` and `--store s3://…`.
struct S3Options: ParsableArguments {
    @Option(name: .customLong("s3-endpoint"),
            help: "The S3-compatible service, http[s]://host[:port] (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, or AWS's regional endpoint).")
    var endpoint: String?

    @Option(name: .customLong("s3-region"), help: "The region requests are signed for (default: $AWS_REGION, $AWS_DEFAULT_REGION or us-east-1).")
    var region: String?

    @Option(name: .customLong("s3-addressing"),
            help: "path (http://endpoint/bucket/key; the default with --s3-endpoint) or virtual-host (https://bucket.endpoint/key; the default on AWS).")
    var addressing: String?

    @Option(name: .customLong("s3-access-key"), help: "Access key id, with --s3-secret-key (both or neither; default: $AWS_ACCESS_KEY_ID; prefer the environment).")
    var accessKey: String?

    @Option(name: .customLong("s3-secret-key"), help: "Secret access key, with --s3-access-key (default: $AWS_SECRET_ACCESS_KEY; prefer the environment: flags show in `ps`).")
    var secretKey: String?

    /// Checked before anything starts, whether or not an `s3://` location
    /// is given: a misspelt flag is said at once, not ignored.
    func validate() throws {
        if let addressing, S3Configuration.Addressing(rawValue: addressing) == nil {
            throw ValidationError("--s3-addressing must be path or virtual-host, not '\(addressing)'")
        }
        if (accessKey == nil) != (secretKey == nil) {
            throw ValidationError("--s3-access-key and --s3-secret-key go together: pass both, or neither (and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        }
    }

    func configuration(for location: String) throws -> S3Configuration {
        var style: S3Configuration.Addressing?
        if let addressing {
            guard let parsed = S3Configuration.Addressing(rawValue: addressing) else {
                throw CLIError("--s3-addressing must be path or virtual-host, not '\(addressing)'")
            }
            style = parsed
        }
        var credentials = S3Credentials.fromEnvironment()
        if let accessKey, let secretKey {
            credentials = S3Credentials(accessKeyID: accessKey, secretAccessKey: secretKey,
                                        sessionToken: ProcessInfo.processInfo.environment["AWS_SESSION_TOKEN"])
        } else if accessKey != nil || secretKey != nil {
            throw CLIError("pass both --s3-access-key and --s3-secret-key, or neither (and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
        }
        do {
            return try S3Configuration.resolve(location: location, endpoint: endpoint, region: region, addressing: style,
                                               credentials: credentials)
        } catch {
            throw CLIError("\(error)")
        }
    }
}

/// The lake and the segment store a process uses, opened from `DataOptions`:
/// local folders, or buckets of an S3-compatible service (each with its own
/// connection pool, closed by `shutdown`).
struct Backends {
    var lake: any DataLake
    var store: any SegmentStorage
    /// Where the store's files are on this host: the store itself, or for an
    /// object store the folder for files being written and copies being read.
    var storeFolder: URL
    /// The store when its files are not in `storeFolder` already (an object
    /// store): the match server fetches segments from it. Nil for a folder.
    var remoteStore: (any SegmentStorage)?
    var clients: [S3Client] = []
    var description: (lake: String, store: String)
    /// Whether the lake's files appear whole (an object store's objects),
    /// so that the scan need not wait for them to settle.
    var lakeFilesAppearWhole: Bool { lake is S3Lake }

    static func open(_ data: DataOptions, logger: Logger) throws -> Backends {
        var clients: [S3Client] = []
        let lake: any DataLake
        let store: any SegmentStorage
        if let location = data.lake, location.hasPrefix("s3://") {
            let client = S3Client(try data.s3.configuration(for: location), logger: logger)
            clients.append(client)
            lake = S3Lake(client: client)
        } else {
            lake = LocalFolderLake(root: data.lakeURL)
        }
        let folder = data.storeFolderURL
        if let location = data.store, location.hasPrefix("s3://") {
            let client = S3Client(try data.s3.configuration(for: location), logger: logger)
            clients.append(client)
            store = S3SegmentStorage(client: client, local: folder)
        } else {
            store = LocalSegmentStorage(root: folder)
        }
        return Backends(lake: lake, store: store, storeFolder: folder, remoteStore: data.storeIsS3 ? store : nil, clients: clients,
                        description: (data.lake?.hasPrefix("s3://") == true ? data.lake! : data.lakeURL.path,
                                      data.store?.hasPrefix("s3://") == true ? data.store! : folder.path))
    }

    /// Lists one key of each bucket, so that wrong credentials, a missing
    /// bucket or a skewed clock stop the process at start with one clear
    /// line instead of failing every task later. An unreachable server is
    /// only a warning: it may come up after this process.
    func check(logger: Logger) async throws {
        for client in clients {
            do {
                _ = try await client.listPage(prefix: "", maxKeys: 1)
            } catch where error.kind == .transport {
                logger.warning("the object store does not answer yet; retrying as work arrives", metadata: ["error": "\(error)"])
            } catch {
                try? await shutdown()
                throw CLIError("\(error)")
            }
        }
    }

    /// Closes the connection pools, logging each one's requests and bytes
    /// (what a benchmark reads, what an operator pays for).
    func shutdown(logger: Logger? = nil) async throws {
        for client in clients {
            if let logger {
                let usage = client.usageSoFar
                logger.notice("object store usage", metadata: [
                    "bucket": "\(client.bucket)", "requests": "\(usage.requests.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                    "retries": "\(usage.retries)", "bytes_received": "\(usage.bytesReceived)", "bytes_sent": "\(usage.bytesSent)"])
            }
            try await client.shutdown()
        }
    }
}
