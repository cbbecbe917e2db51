import Foundation
import IDLCompiler

/// roster-idl: Roster's schema compiler.
///
///     roster-idl [--swift-out DIR] [--proto-out DIR] [--legacy-optional] [--check] FILE...
///     roster-idl --manifest codegen/manifest.json [--check]
///
/// Exit status: 0 on success, 1 on schema errors or drift, 2 on bad usage.

let usage = """
    usage: roster-idl [--swift-out DIR] [--proto-out DIR] [--legacy-optional] [--check] FILE...
           roster-idl --manifest PATH [--check]

    Compiles Roster IDL files (.rdl) into Swift messages and service stubs and an
    equivalent proto3 .proto file.

      --swift-out DIR      write one .swift file per schema file into DIR
      --proto-out DIR      write one .proto file per schema file into DIR
      --legacy-optional    emit `optional` fields as synthetic oneofs (protobuf-c 1.4)
      --manifest PATH      run every job listed in PATH (codegen/manifest.json)
      --check              write nothing; exit 1 if the files on disk differ from
                           what the schema generates
      -h, --help           show this text
    """

func fail(_ message: String, status: Int32) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(status)
}

var swiftOut: String?
var protoOut: String?
var legacyOptional = false
var check = false
var manifestPath: String?
var inputs: [String] = []

var arguments = CommandLine.arguments.dropFirst()
while let arg = arguments.popFirst() {
    switch arg {
    case "-h", "--help":
        print(usage)
        exit(0)
    case "--swift-out":
        guard let v = arguments.popFirst() else { fail("roster-idl: --swift-out needs a folder\n\n\(usage)", status: 2) }
        swiftOut = v
    case "--proto-out":
        guard let v = arguments.popFirst() else { fail("roster-idl: --proto-out needs a folder\n\n\(usage)", status: 2) }
        protoOut = v
    case "--manifest":
        guard let v = arguments.popFirst() else { fail("roster-idl: --manifest needs a path\n\n\(usage)", status: 2) }
        manifestPath = v
    case "--legacy-optional":
        legacyOptional = true
    case "--check":
        check = true
    default:
        if arg.hasPrefix("-") { fail("roster-idl: unknown option '\(arg)'\n\n\(usage)", status: 2) }
        inputs.append(arg)
    }
}

let jobs: [Manifest.Job]
let root: URL
if let manifestPath {
    guard inputs.isEmpty, swiftOut == nil, protoOut == nil else {
        fail("roster-idl: --manifest takes no schema files or output folders\n\n\(usage)", status: 2)
    }
    do {
        (jobs, root) = try { let (m, r) = try Manifest.load(manifestPath); return (m.jobs, r) }()
    } catch {
        fail("roster-idl: cannot read manifest \(manifestPath): \(error)", status: 2)
    }
} else {
    guard !inputs.isEmpty else { fail("roster-idl: no schema files given\n\n\(usage)", status: 2) }
    jobs = [Manifest.Job(inputs: inputs, swiftOut: swiftOut, protoOut: protoOut, legacyOptional: legacyOptional)]
    root = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
}

var failed = false
for job in jobs {
    let result: Result<[GeneratedFile], CompileFailure>
    do {
        result = try IDLCompiler.run(job, root: root)
    } catch {
        fail("roster-idl: \(error)", status: 1)
    }
    switch result {
    case .failure(let failure):
        FileHandle.standardError.write(Data((failure.description + "\n").utf8))
        let n = failure.diagnostics.count
        FileHandle.standardError.write(Data("\(n) error\(n == 1 ? "" : "s")\n".utf8))
        failed = true
    case .success(let files):
        if check {
            let drift = IDLCompiler.drift(files, job: job, root: root)
            for d in drift { FileHandle.standardError.write(Data("drift: \(d)\n".utf8)) }
            if !drift.isEmpty { failed = true }
        } else if job.swiftOut == nil && job.protoOut == nil {
            // Checking the schema alone is a useful job too.
        } else {
            do {
                let written = try IDLCompiler.write(files, root: root)
                for path in written { print("wrote \(path)") }
                if written.isEmpty { print("up to date: \(files.map(\.path).joined(separator: ", "))") }
            } catch {
                fail("roster-idl: \(error)", status: 1)
            }
        }
    }
}
if check && !failed { print("generated code is up to date with the schema") }
exit(failed ? 1 : 0)
