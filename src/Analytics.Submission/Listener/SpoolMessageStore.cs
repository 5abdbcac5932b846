using System.Buffers;
using Analytics.Events;
using Microsoft.Extensions.Logging;
using SmtpServer;
using SmtpServer.Mail;
using SmtpServer.Protocol;
using SmtpServer.Storage;

namespace Analytics.Submission.Listener;

/// <summary>
/// End of DATA: the message goes to the durable spool, and only once it is on disk does the client
/// get 250. SmtpServer swallows exceptions thrown here without a reply, so every outcome is a reply.
/// </summary>
internal sealed partial class SpoolMessageStore : IMessageStore
{
    public async Task<SmtpResponse> SaveAsync(ISessionContext context, IMessageTransaction transaction, ReadOnlySequence<byte> buffer, CancellationToken cancellationToken)
    {
        var session = SessionState.From(context);

        // The reader wrote the message to the spool as it arrived; SmtpServer's buffer is empty.
        var message = Interlocked.Exchange(ref session.MessageSlot, null);
        if (message is null)
        {
            return Replies.Response(451, "4.3.0 Local error in processing, try again later");
        }

        try
        {
            return await SaveAsync(session, transaction, message, cancellationToken);
        }
        finally
        {
            message.Discard(); // a no-op once committed
        }
    }

    private static async Task<SmtpResponse> SaveAsync(SessionState session, IMessageTransaction transaction, IncomingMessage message, CancellationToken cancellationToken)
    {
        var listener = session.Listener;
        session.DataSize = message.Size;
        if (session.Oversize || message.Oversize)
        {
            return Replies.Response(552, "5.3.4 Message size exceeds fixed maximum message size");
        }

        if (message.Refusal is { } why)
        {
            if (why.StartsWith("spool full", StringComparison.Ordinal) || why.StartsWith("spool write", StringComparison.Ordinal))
            {
                LogSpoolRefused(listener.Logger, listener.Spool.Directory, why);
            }

            // Over the bytes-in-flight cap, the spool quota, or a full disk: Postfix's answer when the
            // queue file system is short of space. The client keeps the message and retries.
            return Replies.Response(452, InsufficientStorage);
        }

        if (listener.Queue is { } queue && !queue.HasRoomFor(message.Size))
        {
            return Replies.Response(452, InsufficientStorage);
        }

        var now = listener.Time.GetUtcNow();
        var envelope = new SpoolEnvelope(
            message.Id,
            transaction.From?.AsAddress() ?? "",
            [.. transaction.To.Select(t => t.AsAddress() ?? "")],
            session.ClientIp.ToString(),
            session.ClientPort,
            session.User,
            session.Role == ListenerRole.Mx ? "mx" : "submission",
            session.Helo,
            session.Pipe?.IsSecure ?? false,
            now,
            session.Id.ToString("x16", System.Globalization.CultureInfo.InvariantCulture),
            listener.Options.NodeName,
            message.Size);
        try
        {
            // The message's fsync runs while the spool writes and fsyncs the envelope.
            await listener.Spool.CommitAsync(envelope, message.TempPath, message.CompleteAsync(), cancellationToken);
            message.Committed();
        }
        catch (IOException ex) when (ex.HResult is ENOSPC or EDQUOT)
        {
            LogSpoolFull(listener.Logger, ex, listener.Spool.Directory);
            return Replies.Response(452, InsufficientStorage);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            LogSpoolFailed(listener.Logger, ex, listener.Spool.Directory);
            return Replies.Response(451, "4.3.0 Local error in processing, try again later");
        }

        session.QueueId = message.Id;
        listener.Rules.Delivered(session, envelope.Recipients.Count);
        listener.Queue?.Enqueued(envelope);
        return Replies.Response(250, "2.0.0 OK: queued as " + message.Id);
    }

    private const string InsufficientStorage = "4.3.1 Insufficient system storage";

    // What .NET puts in IOException.HResult on Unix for "no space left on device" and "quota exceeded".
    private const int ENOSPC = 28;
    private const int EDQUOT = 122;

    [LoggerMessage(Level = LogLevel.Error, Message = "The spool {SpoolDirectory} is full; new mail is refused with 452 4.3.1 until there is room")]
    private static partial void LogSpoolFull(ILogger logger, Exception exception, string spoolDirectory);

    [LoggerMessage(Level = LogLevel.Error, Message = "A message was refused with 452 4.3.1 while it was written to the spool {SpoolDirectory}: {Reason}")]
    private static partial void LogSpoolRefused(ILogger logger, string spoolDirectory, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "Could not write an accepted message to the spool {SpoolDirectory}; the client was told to retry")]
    private static partial void LogSpoolFailed(ILogger logger, Exception exception, string spoolDirectory);
}
