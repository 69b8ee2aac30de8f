from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from notes.models import Note


@csrf_exempt
def notes(request):
    if request.method == "POST":
        Note.objects.create(text=request.POST["text"])
        return HttpResponse(status=201)
    return JsonResponse({"notes": list(Note.objects.values_list("text", flat=True))})


async def count(request):
    return JsonResponse({"count": await Note.objects.acount()})
