# call_tasks.py: run while `celeriac -A tasks worker` runs in the same folder.
from tasks import add, greet

result = add.delay(4, 4)
print(result.get(timeout=30))  # 8

print(greet.delay("Ada").get(timeout=30))  # hello Ada, from task 1f0c...

results = [add.delay(i, i) for i in range(10)]
print(sum(r.get(timeout=30) for r in results))  # 90
