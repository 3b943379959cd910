Attribute VB_Name = "RibbonMyAddin"
' xlcrm ribbon callbacks, named by customUI/customUI14.xml.
'
' Every button calls OnAction; Python (xlcrm.excel.ribbon.dispatch) does the work and turns every
' error into a plain message box. The module keeps the template's name so that the VBA project's
' structure stays as Excel wrote it. Keep this file ASCII: the project's code page is 1252, so
' Japanese text lives in the ribbon XML and in Python.
Option Explicit

Private SearchText As String
Private LastSearch As String
Private LastSearchAt As Double

' Every button: the control id is the action name.
Public Sub OnAction(control As IRibbonControl)
    If control.ID = "search" Then
        ' Typing in the box and then clicking the button fires OnSearchChange first: search once.
        If SearchText = LastSearch And Abs(Timer - LastSearchAt) < 2 Then Exit Sub
    End If
    RunAction control.ID
End Sub

' The search box: Excel calls this when the user presses Enter or leaves the box.
Public Sub OnSearchChange(control As IRibbonControl, text As String)
    SearchText = text
    If Len(text) > 0 Then RunAction "search"
End Sub

Private Sub RunAction(ByVal actionId As String)
    ' RunPython needs a workbook (it passes ActiveWorkbook to Python); without one, say so plainly.
    If ActiveWorkbook Is Nothing Then
        MsgBox NoWorkbookMessage(), vbInformation, "xlcrm"
        Exit Sub
    End If
    If actionId = "search" Then LastSearch = SearchText
    RunPython XlcrmCommand(actionId, SearchText)
    If actionId = "search" Then LastSearchAt = Timer
End Sub

' The Python statement RunPython runs. The query travels as hex of its UTF-16 code units, so quotes,
' Japanese text and shell or cmd.exe metacharacters can never break the command line.
Public Function XlcrmCommand(ByVal actionId As String, ByVal query As String) As String
    XlcrmCommand = "import xlcrm.excel.ribbon as r; r.dispatch('" & actionId & "', query_hex='" _
        & HexUtf16(query) & "')"
End Function

Public Function HexUtf16(ByVal s As String) As String
    Dim i As Long
    Dim code As Long
    Dim out As String
    For i = 1 To Len(s)
        ' AscW returns a signed Integer: code units above &H7FFF come back negative.
        code = AscW(Mid$(s, i, 1))
        If code < 0 Then code = code + 65536
        out = out & Right$("000" & Hex$(code), 4)
    Next i
    HexUtf16 = out
End Function

' Japanese for "open a workbook first", spelled with ChrW to keep this file ASCII.
Private Function NoWorkbookMessage() As String
    NoWorkbookMessage = ChrW(&H30D6) & ChrW(&H30C3) & ChrW(&H30AF) & ChrW(&H3092) & ChrW(&H958B) & ChrW(&H3044) _
        & ChrW(&H3066) & ChrW(&H304B) & ChrW(&H3089) & ChrW(&H62BC) & ChrW(&H3057) & ChrW(&H3066) _
        & ChrW(&H304F) & ChrW(&H3060) & ChrW(&H3055) & ChrW(&H3044) & ChrW(&H3002) _
        & vbCrLf & "Open a workbook first."
End Function
