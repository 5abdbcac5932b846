using System.Net.Sockets;

namespace Analytics.Policy;

/// <summary>
/// The accept loop both policy servers share: each accepted connection served on its own by
/// <c>serve</c>, a failed accept retried after a pause, and on dispose the loop stopped, the socket
/// closed and every open connection awaited.
/// </summary>
internal sealed class PolicyListener : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly Func<Socket, CancellationToken, Task> _serve;
    private readonly Action<SocketError>? _acceptFailed;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<Task> _connections = [];
    private readonly Task _accept;

    public PolicyListener(Socket socket, Func<Socket, CancellationToken, Task> serve, TimeProvider time, Action<SocketError>? acceptFailed = null)
    {
        _socket = socket;
        _serve = serve;
        _time = time;
        _acceptFailed = acceptFailed;
        _accept = AcceptLoopAsync(_stopping.Token);
    }

    private async Task AcceptLoopAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket.AcceptAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (SocketException ex) when (!cancellationToken.IsCancellationRequested)
            {
                _acceptFailed?.Invoke(ex.SocketErrorCode);
                await Task.Delay(TimeSpan.FromMilliseconds(50), _time, CancellationToken.None);
                continue;
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                return;
            }

            if (client.AddressFamily != AddressFamily.Unix)
            {
                client.NoDelay = true;
            }

            var task = _serve(client, cancellationToken);
            lock (_connections)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(task);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _socket.Dispose();
        await _accept;
        Task[] open;
        lock (_connections)
        {
            open = [.. _connections];
        }

        await Task.WhenAll(open);
        _stopping.Dispose();
    }
}
