#if canImport(Glibc)
    import Glibc
#endif

/// A value guarded by a mutex. Unlike `Synchronization.Mutex` it lets generic, non-Sendable
/// results out of the critical section, which the store's catalog and appender need; the
/// caller is responsible for not leaking references to the guarded state.
public final class Locked<Value>: @unchecked Sendable {
    /// Heap-allocated so its address is stable (a pthread mutex must never move).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// A raw buffer handed to parallel workers that each touch a disjoint part of it.
public struct UnsafeSendableBuffer: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer
    public init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

/// Read-only bytes handed to another thread while the owner waits for it to finish.
public struct UnsafeSendableBytes: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
}
