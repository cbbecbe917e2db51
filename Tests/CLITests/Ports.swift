import Foundation

/// A port free now (the OS picks it), for a flag that takes a number.
func freePort() throws -> Int {
    let (fd, port) = try boundSocket(listening: false)
    close(fd)
    return port
}

/// A port some other program is listening on: the socket stays open until
/// the returned descriptor is closed.
func busyPort() throws -> (fd: Int32, port: Int) {
    try boundSocket(listening: true)
}

private func boundSocket(listening: Bool) throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound, !listening || listen(fd, 1) == 0 else {
        close(fd)
        throw NSError(domain: "ports", code: Int(errno))
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}
