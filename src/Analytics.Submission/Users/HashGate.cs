namespace Analytics.Submission;

/// <summary>
/// How much password hashing runs at once. Hashing is the one thing an attacker can make the server
/// spend CPU on; with at most <c>capacity</c> hashes in flight (one per core by default) SMTP stays
/// responsive however many wrong passwords arrive. Waiters queue in two lanes: an account logging in
/// from its owner's network goes ahead of everyone else; a full queue, or a wait past its limit,
/// answers "busy" at once (454, try later) instead of growing a backlog the attacker controls.
/// </summary>
internal sealed class HashGate
{
    private readonly Lock _gate = new();
    private readonly Queue<TaskCompletionSource<bool>> _priority = new();
    private readonly Queue<TaskCompletionSource<bool>> _normal = new();
    private readonly int _capacity;
    private readonly int _maxQueue;
    private int _running;

    public HashGate(int capacity, int maxQueue)
    {
        _capacity = Math.Max(1, capacity);
        _maxQueue = Math.Max(0, maxQueue);
    }

    /// <summary>Hashes waiting for a slot (both lanes).</summary>
    public int Waiting
    {
        get
        {
            lock (_gate)
            {
                return _priority.Count + _normal.Count;
            }
        }
    }

    /// <summary>Waits for a slot; false when the queue is full or <paramref name="maxWait"/> passed. A true result must be followed by <see cref="Release"/>.</summary>
    public async ValueTask<bool> EnterAsync(bool priority, TimeSpan maxWait, TimeProvider time, CancellationToken cancellationToken)
    {
        TaskCompletionSource<bool> waiter;
        lock (_gate)
        {
            if (_running < _capacity)
            {
                _running++;
                return true;
            }

            var lane = priority ? _priority : _normal;
            if (_priority.Count + _normal.Count >= _maxQueue && !priority)
            {
                return false;
            }

            waiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            lane.Enqueue(waiter);
        }

        using var timeout = new CancellationTokenSource(maxWait, time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token, cancellationToken);
        await using (linked.Token.Register(() => waiter.TrySetResult(false)))
        {
            if (await waiter.Task)
            {
                return true;
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        return false;
    }

    public void Release()
    {
        lock (_gate)
        {
            // Hand the slot straight to the next waiter that is still waiting (timed-out ones are skipped).
            while (_priority.TryDequeue(out var next) || _normal.TryDequeue(out next))
            {
                if (next.TrySetResult(true))
                {
                    return;
                }
            }

            _running--;
        }
    }
}
