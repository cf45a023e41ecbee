import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` with an interim `100 Continue`, which Hummingbird does not
/// do by itself: without it curl and others wait a second before sending an upload's body.
///
/// The interim response belongs to its request, so with HTTP/1.1 pipelining it may only be
/// written once every earlier response has ended: written as soon as the head arrived, it
/// landed inside the previous response's body (an attacker's read found `HTTP/1.1 100
/// Continue` injected into a blob being streamed). So the handler keeps, for each request
/// whose response has not ended, whether it still owes that request a `100 Continue`, and
/// sends it when the request reaches the front of the line.
final class ContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    /// Requests in arrival order whose responses have not ended: true when it still awaits its 100.
    private var owed: [Bool] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            let wants = head.headerFields[.expect]?.lowercased() == "100-continue"
            if owed.isEmpty && wants {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
                owed.append(false)
            } else {
                owed.append(wants)
            }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        context.write(data, promise: promise)
        if !owed.isEmpty { owed.removeFirst() }
        if owed.first == true {
            owed[0] = false
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
    }
}
